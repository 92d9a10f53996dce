"""interp: scale a language model's hidden states and measure what it does to the next token.

The flow: load a model -> build interventions -> run -> measure -> plot/report.

>>> import interp
>>> model = interp.load_model("smollm2-135m-instruct")          # offline, embedded
>>> res = interp.compare_scaling(model, "I have no special talents. I am only passionately",
...                              " curious", {2: 0.6})
>>> res.intervened.target_loss - res.clean.target_loss, res.pearson_r
>>> sweep = interp.sweep_layers(model, prompt, " curious", factor=0.6)
>>> with interp.scaling_hooks(model, scales := {2: 0.6}):     # the dict is read live
...     model(tokens); scales[2] = 0.9; model(tokens)
"""

from ._errors import (
    BadFactorError,
    InterpError,
    LayerOutOfRangeError,
    ModelNotAvailableError,
    PromptError,
    TargetError,
    UnknownModelError,
)
from ._experiment import (
    LayerSweep,
    ScalingComparison,
    compare_scaling,
    parse_layers,
    sweep_layers,
)
from ._metrics import (
    DistributionSummary,
    TokenProb,
    TokenScore,
    compare_logits,
    entropy,
    kl_divergence,
    mean_logit_shift,
    pearson_r,
    summarize,
    token_rank,
    top_k,
)
from ._models import (
    EMBEDDED_MODEL,
    MODEL_ALIASES,
    ModelInfo,
    cache_dir,
    from_hf,
    load_model,
    model_info,
)
from ._scaling import (
    SITES,
    hook_census,
    hook_name,
    make_scaling_hooks,
    run_with_scaling,
    scaling_hooks,
    validate_scales,
)
from ._claims import assess_claims
from ._report import HiddenStateScalingRun, run_hidden_state_scaling, run_manifest, write_outputs
from ._plots import logit_scatter, sweep_figure, topk_figure, write_figures
from ._sweep import max_abs_diff, parse_factors, sweep
from ._temperature import fit_temperature
from ._tokens import Example, encode, tokenizer_of

CHALLENGE_PROMPT = "I have no special talents. I am only passionately"
CHALLENGE_TARGET = " curious"
CHALLENGE_SCALES = {2: 0.6}

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
