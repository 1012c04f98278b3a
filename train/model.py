"""Build and save the regression student: what training alone needs.

One `AutoModelForSequenceClassification(num_labels=D, problem_type="regression")`
for both families: decoder LLMs (Qwen2 and kin: pad token set, HF pools the
last non-pad token, inputs padded on the right) and encoders (BERT/MiniLM).
LoRA through peft (all linear layers of the backbone) with the regression head
trained in full and saved beside the adapter, or a full fine-tune.

Loading, tokenising, padding, predicting and the head checks live in the
shared core, distill.student, which every later stage reads a model folder with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.artifact import StudentInfo, write_info
from distill.model_card import write_card
from distill.student.encode import pad_sequences
from distill.student.heads import head_checksum, head_name
from distill.student.load import (
    architecture_of,
    ensure_pad_token,
    loading_base,
    quiet_transformers,
    resolve_base,
)


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

    quiet_transformers()
    path = resolve_base(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    architecture = architecture_of(config)
    ensure_pad_token(tokenizer)
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
    ensure_pad_token(tokenizer, model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # Casts the non-quantised parts (norms, head) to fp32: the head stays full precision.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    if not full_finetune:
        model = add_lora(model, lora_rank)
    return model, tokenizer, architecture


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


def add_lora(model: Any, rank: int) -> Any:
    """LoRA on all linear layers of the backbone; the head is trained in full and saved."""
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
    """Weights (safetensors), tokenizer, distill.json (with the head's checksum) and the model card."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for config in getattr(model, "peft_config", {}).values():
        # name the base as distill.json does, not by this machine's absolute path
        config.base_model_name_or_path = info.base_model
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    info.training = {**info.training, "head_sha256": head_checksum(model)}
    write_info(folder, info)
    write_card(folder, info)
    return folder


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """A training batch: right-padded input_ids and attention_mask as torch tensors
    (distill.student.encode.pad_sequences, converted)."""
    import torch

    ids, mask = pad_sequences(sequences, pad_id)
    return torch.from_numpy(ids), torch.from_numpy(mask)
