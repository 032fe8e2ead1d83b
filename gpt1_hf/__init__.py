"""gpt1-hf: GPT-1 (Radford et al. 2018) for Hugging Face transformers 5.

`import gpt1_hf` registers model_type "gpt1" with AutoConfig, AutoModel, AutoModelForCausalLM,
AutoModelForSequenceClassification, AutoModelForMultipleChoice and AutoTokenizer, and PEFT's default LoRA targets.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
    AutoTokenizer,
)

from .configuration_gpt1 import GPT1Config
from .lora import register_peft_defaults
from .modeling_gpt1 import (
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1LMHeadModel,
    GPT1Model,
    GPT1PreTrainedModel,
)
from .tokenization_gpt1 import GPT1Tokenizer

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(GPT1Config.model_type, GPT1Config, exist_ok=True)
    AutoModel.register(GPT1Config, GPT1Model, exist_ok=True)
    AutoModelForCausalLM.register(GPT1Config, GPT1LMHeadModel, exist_ok=True)
    AutoModelForSequenceClassification.register(GPT1Config, GPT1ForSequenceClassification, exist_ok=True)
    AutoModelForMultipleChoice.register(GPT1Config, GPT1ForMultipleChoice, exist_ok=True)
    AutoTokenizer.register(GPT1Config, fast_tokenizer_class=GPT1Tokenizer, exist_ok=True)
    register_peft_defaults()  # PEFT's default LoRA target modules for model_type "gpt1" (when PEFT is installed)


_register()

__all__ = [
    "GPT1Config",
    "GPT1PreTrainedModel",
    "GPT1Model",
    "GPT1LMHeadModel",
    "GPT1ForSequenceClassification",
    "GPT1ForMultipleChoice",
    "GPT1Tokenizer",
]
