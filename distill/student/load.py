"""Load a student model folder: the one loader every stage after training uses.

One `AutoModelForSequenceClassification(num_labels=D, problem_type="regression")`
for both families: decoder LLMs (Qwen2 and kin: pad token set, HF pools the
last non-pad token) and encoders (BERT/MiniLM). A folder holds a LoRA adapter
with the trained head (`peft-lora`, loaded onto its base) or whole weights
(`full`, `merged`). Weights are read from safetensors only, and checked from
their headers before any framework reads them.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distill.artifact import INFO_FILE, RESTORE, StudentInfo, read_info, weight_shapes
from distill.errors import ModelArtifactError
from distill.local_models import MINILM_HUB_ID, MissingPackageError
from distill.student.files import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILE,
    FULL_FILE,
    FULL_INDEX_FILE,
    WEIGHTS_FORMATS,
)
from distill.student.heads import check_head_shapes, head_param_names


class BaseModelError(ModelArtifactError):
    """The base model a student is built on is missing or its weights are corrupt."""

    def __init__(self, base_id: str, reason: str, fix: str):
        self.base_id = base_id
        self.reason = reason
        super().__init__(f"base model {base_id!r} cannot be loaded ({reason}); {fix}")


def architecture_of(config: Any) -> str:
    """"decoder" for causal LMs (last-token pooling), "encoder" otherwise."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    # BERT also has a causal-LM head class, so "decoder" means causal-only.
    if kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "decoder"
    return "encoder"


def resolve_base(base_model: str) -> str:
    """A local folder, the offline MiniLM for its hub id, or the hub id as given."""
    if Path(base_model).exists():
        return str(base_model)
    if base_model == MINILM_HUB_ID:
        from distill.local_models import minilm_dir

        try:
            return str(minilm_dir())
        except MissingPackageError:  # package absent: fall back to the hub (or HF cache)
            return base_model
    return base_model


def portable_base_name(base_model: str) -> str:
    """What distill.json records: the hub id for the packaged MiniLM, else as given."""
    try:
        from distill.local_models import minilm_dir

        if Path(base_model).resolve() == minilm_dir().resolve():
            return MINILM_HUB_ID
    except (MissingPackageError, ModelArtifactError):  # absent or altered: not the packaged MiniLM
        pass
    return base_model


def base_of(folder: Path, info: StudentInfo, override: str | None = None) -> str:
    """The base an adapter folder loads onto: `override`, distill.json's, else adapter_config.json's."""
    base = override or info.base_model or _read_json(folder / ADAPTER_CONFIG_FILE).get("base_model_name_or_path")
    return resolve_base(base or "")


def quiet_transformers() -> None:
    """Weight-loading progress bars and expected-missing-head reports would drown our own output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # peft still calls a transformers method deprecated in v5; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def ensure_pad_token(tokenizer: Any, model: Any = None) -> None:
    """Decoders often ship without a pad token; eos is safe because we never append
    eos ourselves, so the last non-pad token is the article's last. The model's
    config gets the same id (last-token pooling looks for it)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id


def load_tokenizer(folder: str | Path) -> Any:
    """The folder's tokenizer, pad token set; unusable files are one ModelArtifactError."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ModelArtifactError(f"{folder}: no usable tokenizer files ({first_line(exc)})") from None
    ensure_pad_token(tokenizer)
    return tokenizer


def load_student(
    model_dir: str | Path,
    device: str = "cpu",
    *,
    base_model: str | None = None,
    attn_implementation: str | None = None,
) -> tuple[Any, Any, StudentInfo]:
    """(model in eval mode, float32, tokenizer, info) from a model folder; safetensors only.

    A peft-lora folder comes back as a PeftModel on its base (`base_model`
    overrides the one distill.json names). The folder is checked before any
    framework reads it (check_saved_weights), and a head left out of the saved
    weights is caught after, so each fault is one ModelArtifactError naming the
    file, not a loader's traceback or a silently random head.
    """
    import torch

    quiet_transformers()
    folder = Path(model_dir)
    info = read_info(folder)
    check_saved_weights(folder, info)
    tokenizer = load_tokenizer(folder)
    options: dict[str, Any] = {"num_labels": len(info.dimensions), "problem_type": "regression",
                               "use_safetensors": True, "dtype": torch.float32}
    if attn_implementation:
        options["attn_implementation"] = attn_implementation
    if info.weights_format == "peft-lora":
        model = _load_adapter(folder, info, base_model, options)
    else:
        model = _load_full(folder, options)
    ensure_pad_token(tokenizer, model)
    model.to(device).eval()
    return model, tokenizer, info


def _load_adapter(folder: Path, info: StudentInfo, base_model: str | None, options: dict[str, Any]) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base_id = base_of(folder, info, base_model)
    with loading_base(base_id, f"it is the base_model {folder / INFO_FILE} names: put an intact copy there"):
        # The base's own head (if any) has another shape; the adapter brings the trained one.
        base = AutoModelForSequenceClassification.from_pretrained(base_id, ignore_mismatched_sizes=True, **options)
    saved = weight_shapes(folder / ADAPTER_FILE)
    absent = [name for name in head_param_names(base) if f"base_model.model.{name}" not in saved]
    if absent:
        raise ModelArtifactError(
            f"{folder}: the adapter holds no trained regression head ({', '.join(absent)} not in "
            f"{ADAPTER_FILE}); train with modules_to_save=[head] or task_type SEQ_CLS"
        )
    # peft has no use_safetensors flag: it reads adapter_model.safetensors when the
    # file is there (checked above) and would only then fall back to a pickle.
    return PeftModel.from_pretrained(base, folder, is_trainable=False)


def _load_full(folder: Path, options: dict[str, Any]) -> Any:
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    try:
        model, loading = AutoModelForSequenceClassification.from_pretrained(
            folder, output_loading_info=True, **options
        )
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelArtifactError(f"{folder}: model weights cannot be loaded ({first_line(exc)})") from None
    missing = sorted(set(loading.get("missing_keys", [])) & set(head_param_names(model)))
    if missing:
        raise ModelArtifactError(
            f"{folder}: regression head {missing} is not in the saved weights "
            "(it would be random); retrain or save the head"
        )
    return model


@contextmanager
def loading_base(base_id: str, fix: str) -> Iterator[None]:
    """A base model that is missing or whose safetensors are corrupt: one line naming it."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        raise BaseModelError(base_id, first_line(exc), fix) from None


def check_saved_weights(folder: str | Path, info: StudentInfo) -> None:
    """The folder's weights, checked from the safetensors headers alone: each file
    readable (not truncated), a trained head present, one head output per dimension."""
    folder = Path(folder)
    if info.weights_format not in WEIGHTS_FORMATS:
        raise ModelArtifactError(
            f"{folder / INFO_FILE}: weights_format {info.weights_format!r} is not one of {WEIGHTS_FORMATS}"
        )
    if info.weights_format == "peft-lora":
        files = [folder / ADAPTER_FILE]
        _require_file(files[0])
        _read_json(folder / ADAPTER_CONFIG_FILE)
    elif (folder / FULL_FILE).is_file():
        files = [folder / FULL_FILE]
    else:
        _require_file(folder / FULL_FILE, also=folder / FULL_INDEX_FILE)
        index = _read_json(folder / FULL_INDEX_FILE).get("weight_map")
        if not isinstance(index, dict) or not index:
            raise ModelArtifactError(f"{folder / FULL_INDEX_FILE}: no weight_map of tensors to files; {RESTORE}")
        files = [folder / name for name in sorted(set(map(str, index.values())))]
        for shard in files:
            _require_file(shard)
    shapes = {key: shape for path in files for key, shape in weight_shapes(path).items()}
    check_head_shapes(files[0] if len(files) == 1 else folder / FULL_INDEX_FILE, shapes, info)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelArtifactError(f"{path.parent}: missing {path.name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelArtifactError(f"{path}: not valid JSON ({exc}); {RESTORE}") from None
    if not isinstance(data, dict):
        raise ModelArtifactError(f"{path}: expected a JSON object; {RESTORE}")
    return data


def _require_file(path: Path, also: Path | None = None) -> None:
    if not path.is_file() and not (also is not None and also.is_file()):
        pickled = sorted(p.name for p in path.parent.glob("*.bin"))
        found = f" ({', '.join(pickled)} is there, but pickled weights are never loaded)" if pickled else ""
        raise ModelArtifactError(f"{path.parent}: missing {path.name}: weights are read from safetensors only{found}")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
