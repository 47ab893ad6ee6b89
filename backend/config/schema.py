"""The one declaration of every training option.

Each field states its type, default, bounds and help text once, plus a UI hint (label, basic or
advanced, widget). The web form, the presets, `--set` overrides, the TOML snapshot of a job and the
worker all derive from this tree. Names follow kohya sd-scripts where one exists, so users recognise them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

SCHEMA_VERSION = 1

Family = Literal["sd15", "sdxl", "flux"]
Algo = Literal["lora", "locon", "loha", "lokr", "dylora", "ia3", "glora", "diag-oft", "boft", "full"]
# Algorithms whose adapter runs beside the frozen layer (W·x + ΔW·x, LyCORIS bypass mode) without DoRA:
# the others rebuild the base weight, so they cannot leave it in fp8 storage (training.fp8_base).
BYPASS_ALGOS = frozenset({"lora", "locon", "loha", "lokr", "glora"})
OptimizerName = Literal["adamw", "adamw8bit", "prodigy", "adafactor", "lion", "sgd"]
Scheduler = Literal[
    "constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"
]
Precision = Literal["no", "fp16", "bf16"]
CacheMode = Literal["off", "memory", "disk"]
SaveDtype = Literal["fp16", "bf16", "fp32"]
Target = Literal["attn", "attn-mlp", "all"]
Sampler = Literal["euler_a", "euler", "ddim", "dpmpp_2m"]
Device = Literal["auto", "cuda", "cpu"]
TimestepSampling = Literal["uniform", "sigmoid", "shift", "flux_shift"]
FlowPrediction = Literal["raw", "additive", "sigma_scaled"]
FlowWeighting = Literal["none", "sigma_sqrt", "cosmap"]


PathAccepts = Literal["file", "folder", "file or folder"]


def opt(default: Any, help: str, *, label: str | None = None, basic: bool = False,
        widget: str | None = None, accepts: PathAccepts | None = None, required: bool = False,
        **bounds: Any) -> Any:
    """A schema field with its UI hint. `widget` overrides the widget the form would pick from the type.
    A path option (widget "path") says what it `accepts` on disk and whether training `required` it;
    the checks before a job starts (backend.preflight) derive from these."""
    ui: dict[str, Any] = {"label": label, "basic": basic}
    if widget:
        ui["widget"] = widget
    if widget == "path":
        ui["path"] = {"accepts": accepts or "file or folder", "required": required}
    return Field(default, description=help, json_schema_extra={"ui": ui}, **bounds)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


class Section(BaseModel):
    # NaN and infinity are never meaningful settings (a NaN passes every bound check).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul_bytes(cls, value: Any) -> Any:
        # A NUL byte cannot be part of a path or a file name, and nothing else needs one.
        if _has_nul(value):
            raise ValueError("contains a NUL byte (\\x00); remove it")
        return value


class ModelSection(Section):
    family: Family = opt("sd15", "Model family: SD 1.5 (and its fine-tunes), SDXL (Pony, Illustrious, NoobAI, …) "
                                 "or Flux.1 (dev, schnell).",
                         label="Model family", basic=True)
    path: str = opt("", "Base model: a diffusers folder or a single .safetensors/.ckpt file. Relative paths "
                        "are taken from the workspace.", label="Base model", basic=True, widget="path",
                    accepts="file or folder", required=True)
    vae_path: str = opt("", "Optional VAE to use instead of the model's own (diffusers folder or .safetensors).",
                        label="Custom VAE", widget="path",
                        accepts="file or folder")
    clip_l_path: str = opt("", "Flux: the CLIP-L text encoder file (e.g. clip_l.safetensors) when model.path is "
                               "a single transformer file; empty for a diffusers folder.", label="CLIP-L file",
                           widget="path", accepts="file")
    t5_path: str = opt("", "Flux: the T5-XXL text encoder file (e.g. t5xxl_fp16.safetensors) when model.path "
                           "is a single transformer file; empty for a diffusers folder.", label="T5-XXL file",
                       widget="path", accepts="file")
    t5_max_length: int | None = opt(None, "Flux: T5 tokens per caption; empty uses the model's own (512 for "
                                          "dev, 256 for schnell).", label="T5 max tokens", ge=1, le=512)
    apply_t5_attn_mask: bool = opt(False, "Flux: mask T5's padding tokens in attention (kohya "
                                          "--apply_t5_attn_mask).", label="T5 attention mask")
    v_prediction: bool = opt(False, "The model predicts v instead of noise (SD 2.x-v, NoobAI-v). Also set "
                                    "loss.zero_terminal_snr where the model was trained with it.",
                             label="v-prediction")
    clip_skip: int = opt(1, "Use the output of the N-th last text-encoder layer (2 for most anime SD 1.5 "
                            "models). SDXL always uses the penultimate layer.", label="CLIP skip", ge=1, le=12)


class DatasetSection(Section):
    path: str = opt("", "Dataset folder: flat, or with kohya `N_name` subfolders (N = repeats). Either the "
                        "parent or one `N_name` folder may be picked.", label="Dataset", basic=True, widget="path",
                        accepts="folder", required=True)
    caption_extension: str = opt(".txt", "Extension of the caption file next to each image; tagging writes "
                                         "the same one.", label="Caption extension",
                                 pattern=r"^\.[A-Za-z0-9_-][A-Za-z0-9_.-]{0,15}$")
    resolution: int = opt(512, "Training resolution: the area of the buckets is at most this squared "
                               "(512 for SD 1.5, 1024 for SDXL).", label="Resolution", basic=True,
                          ge=64, le=4096, multiple_of=8)
    enable_bucket: bool = opt(True, "Aspect-ratio bucketing: images keep their shape instead of being "
                                    "cropped square.", label="Aspect-ratio buckets")
    min_bucket_reso: int = opt(256, "Smallest bucket side in pixels.", label="Min bucket side", ge=64, le=4096,
                                    validate_default=True)
    max_bucket_reso: int = opt(1024, "Largest bucket side in pixels.", label="Max bucket side", ge=64, le=8192)
    bucket_reso_steps: int = opt(64, "Bucket sides are multiples of this (64 is safe for every model).",
                                 label="Bucket step", ge=8, le=256, multiple_of=8,
                                 validate_default=True)
    bucket_no_upscale: bool = opt(False, "Never upscale small images: they get a bucket of their own size.",
                                  label="No upscaling")
    default_repeats: int = opt(1, "Repeats for a folder whose name has no `N_` prefix.", label="Repeats",
                               ge=1, le=10000)
    shuffle_caption: bool = opt(False, "Shuffle the comma-separated tags every step (the first keep_tokens "
                                       "stay in place).", label="Shuffle tags", basic=True)
    keep_tokens: int = opt(0, "How many leading tags (trigger word first) never move or drop.",
                           label="Keep tokens", ge=0, le=255)
    caption_prefix: str = opt("", "Added in front of every caption as its first tag (e.g. a trigger word).",
                              label="Caption prefix")
    caption_dropout_rate: float = opt(0.0, "Probability of training a step on an empty caption.",
                                      label="Caption dropout", ge=0.0, le=1.0)
    caption_tag_dropout_rate: float = opt(0.0, "Probability of dropping each tag (kept tokens excepted).",
                                          label="Tag dropout", ge=0.0, le=1.0)
    flip_aug: bool = opt(False, "Randomly mirror images left-right (not for asymmetric subjects or text).",
                         label="Flip augmentation")
    reg_path: str = opt("", "Regularization images (another dataset folder); empty for none.",
                        label="Regularization set", widget="path",
                        accepts="folder")
    reg_repeats: int = opt(1, "Repeats of the regularization set when its folders have no `N_` prefix.",
                           label="Reg. repeats", ge=1, le=10000)
    prior_loss_weight: float = opt(1.0, "Loss weight of regularization images.", label="Prior loss weight",
                                   ge=0.0, le=100.0)
    num_workers: int = opt(1, "Threads that decode and resize a batch's images in parallel, while latents are "
                              "cached and at every step when they are not (0 decodes one by one).",
                           label="Loader threads", ge=0, le=32)

    @field_validator("min_bucket_reso", "bucket_reso_steps")
    @classmethod
    def _bucket_fits_resolution(cls, value: int, info: ValidationInfo) -> int:
        """Buckets are made for `resolution` (backend.dataset.buckets): their smallest side and their step
        cannot be larger than it."""
        resolution, bucketing = info.data.get("resolution"), info.data.get("enable_bucket", True)
        if bucketing and isinstance(resolution, int) and value > resolution:
            raise ValueError(f"{value} must not exceed dataset.resolution ({resolution}) when buckets are on: "
                             f"set dataset.{info.field_name} to {8 if info.field_name == 'bucket_reso_steps' else 64}"
                             f"–{resolution}, raise dataset.resolution to {value} or more, or turn "
                             "dataset.enable_bucket off")
        return value

    @model_validator(mode="after")
    def _buckets_ordered(self) -> DatasetSection:
        if self.enable_bucket and self.min_bucket_reso > self.max_bucket_reso:
            raise ValueError("min_bucket_reso must not exceed max_bucket_reso")
        return self


class NetworkSection(Section):
    algo: Algo = opt("lora", "Adapter type (LyCORIS): lora, locon (LoRA + conv layers), loha, lokr, dylora, "
                             "ia3, glora, diag-oft, boft, or full (fine-tune the targeted layers).",
                     label="Algorithm", basic=True)
    rank: int = opt(8, "Rank (network_dim) of linear layers: capacity and file size. LoKr takes large "
                       "values (e.g. 10000) to mean full rank.", label="Rank (dim)", basic=True, ge=1, le=100000)
    alpha: float = opt(4.0, "Alpha: the update is scaled by alpha/rank (kohya convention).", label="Alpha",
                       basic=True, ge=0.0, le=4096.0)
    conv_rank: int = opt(0, "Rank of 3×3 conv layers (loha, lokr, …); 0 leaves them out, except for "
                            "locon, which then gives them the linear rank and alpha.",
                         label="Conv rank", ge=0, le=100000)
    conv_alpha: float = opt(1.0, "Alpha of conv layers.", label="Conv alpha", ge=0.0, le=4096.0)
    target: Target = opt("attn-mlp", "Which UNet layers get adapters: attention only; attention + "
                                     "feed-forward + projections; or every linear and conv layer.",
                         label="Target layers")
    dora: bool = opt(False, "Weight-decomposed adaptation (DoRA) on lora/loha/lokr.", label="DoRA")
    dropout: float = opt(0.0, "Dropout on the adapter's hidden units.", label="Dropout", ge=0.0, le=1.0)
    rank_dropout: float = opt(0.0, "Dropout of whole ranks each step.", label="Rank dropout", ge=0.0, le=1.0)
    module_dropout: float = opt(0.0, "Probability of skipping a whole adapter module each step.",
                                label="Module dropout", ge=0.0, le=1.0)
    factor: int = opt(-1, "LoKr Kronecker factor (-1 picks it automatically).", label="LoKr factor",
                      ge=-1, le=1024)
    decompose_both: bool = opt(False, "LoKr: also decompose the smaller matrix.", label="LoKr decompose both")
    block_size: int = opt(4, "DyLoRA: ranks trained per block.", label="DyLoRA block size", ge=1, le=1024)
    use_tucker: bool = opt(False, "Tucker decomposition for conv layers (locon, loha, lokr).",
                           label="Tucker decomposition")
    use_scalar: bool = opt(False, "Train an extra scalar per module (LyCORIS).", label="Scalar")
    constraint: float = opt(0.0, "Diag-OFT/BOFT constraint (0 = none).", label="OFT constraint", ge=0.0, le=1e6)
    rescaled: bool = opt(False, "Diag-OFT/BOFT: learn a rescaling too.", label="OFT rescaled")
    train_norm: bool = opt(False, "Also train normalisation layers.", label="Train norms")
    train_text_encoder: bool = opt(False, "Also train the text encoder(s) (more likeness, less flexibility).",
                                   label="Train text encoder", basic=True)
    unet_lr: float | None = opt(None, "Learning rate of the UNet adapters; empty uses optimizer.lr.",
                                label="UNet learning rate", gt=0.0, le=10.0)
    text_encoder_lr: float | None = opt(None, "Learning rate of the text-encoder adapters; empty uses "
                                              "optimizer.lr.", label="Text-encoder learning rate",
                                        gt=0.0, le=10.0)
    text_encoder_2_lr: float | None = opt(None, "SDXL: learning rate of the second text encoder (OpenCLIP "
                                                "bigG); 0 freezes it; empty uses text_encoder_lr.",
                                          label="Text-encoder 2 learning rate", ge=0.0, le=10.0)
    network_weights: str = opt("", "Start from an existing LoRA file (same algorithm and rank) instead of "
                                   "zero.", label="Initial weights", widget="path",
                                 accepts="file")

    @model_validator(mode="after")
    def _algorithm_fits(self) -> NetworkSection:
        """Combinations LyCORIS cannot build, refused before anything is loaded."""
        if self.algo == "dylora" and self.rank % self.block_size:
            raise ValueError(f"DyLoRA needs rank ({self.rank}) to be a multiple of block_size ({self.block_size})")
        if self.algo == "dylora" and self.network_weights:
            raise ValueError("continuing a DyLoRA from network_weights is not supported; leave it empty")
        if self.dora and self.algo not in ("lora", "locon", "loha", "lokr"):
            raise ValueError(f"DoRA works with lora, locon, loha and lokr, not {self.algo}; turn dora off")
        return self


class OptimizerSection(Section):
    name: OptimizerName = opt("adamw", "AdamW; AdamW 8-bit (bitsandbytes, CUDA only); Prodigy (set lr to 1); "
                                       "Adafactor; Lion; SGD.", label="Optimizer", basic=True)
    lr: float = opt(1e-4, "Base learning rate.", label="Learning rate", basic=True, gt=0.0, le=10.0)
    weight_decay: float = opt(0.01, "Decoupled weight decay.", label="Weight decay", ge=0.0, le=10.0)
    beta1: float = opt(0.9, "First-moment decay (Adam-family, Lion, Prodigy).", label="Beta 1",
                       ge=0.0, lt=1.0)
    beta2: float = opt(0.999, "Second-moment decay (Adam-family, Lion, Prodigy).", label="Beta 2",
                       ge=0.0, lt=1.0)
    eps: float = opt(1e-8, "Adam epsilon.", label="Epsilon", gt=0.0, le=1.0)
    momentum: float = opt(0.9, "SGD momentum.", label="SGD momentum", ge=0.0, lt=1.0)
    extra_args: dict[str, float | int | bool | str] = opt(
        {}, "Further keyword arguments for the optimizer, e.g. {d_coef = 2, use_bias_correction = true} "
            "for Prodigy.", label="Extra optimizer arguments", widget="json")


class TrainingSection(Section):
    max_steps: int | None = opt(None, "Length of the run in optimizer steps; when set it wins over epochs.",
                                label="Max steps", basic=True, ge=1, le=10_000_000)
    epochs: int | None = opt(10, "Passes over the dataset (with repeats); used when max_steps is "
                                 "empty.", label="Epochs", basic=True, ge=1, le=100_000)
    batch_size: int = opt(1, "Images per step.", label="Batch size", basic=True, ge=1, le=256)
    gradient_accumulation_steps: int = opt(1, "Accumulate this many batches per optimizer step.",
                                           label="Gradient accumulation", ge=1, le=1024)
    max_grad_norm: float = opt(1.0, "Clip the gradient norm to this (0 = no clipping).", label="Max grad norm",
                               ge=0.0, le=1e6)
    seed: int = opt(42, "Random seed: the same seed and settings give the same run.", label="Seed",
                    ge=0, le=2**32 - 1)
    mixed_precision: Precision = opt("no", "Compute in fp16 or bf16 (GPU); trainable weights stay in fp32. "
                                           "bf16 needs an Ampere or newer GPU.", label="Mixed precision",
                                     basic=True)
    fp8_base: bool = opt(False, "Store the frozen base model's linear weights in float8 (e4m3) and upcast each "
                                "layer as it runs: about half the memory of bf16 for the model, for 16–24 GB "
                                "cards (kohya --fp8_base).", label="fp8 base model")
    compile: bool = opt(False, "torch.compile the denoiser's repeated blocks (GPU): faster steps after a "
                               "compile of a minute or two at the start.", label="Compile (torch.compile)")
    gradient_checkpointing: bool = opt(False, "Recompute activations in the backward pass: much less memory, "
                                              "about 20–30 % slower.", label="Gradient checkpointing")
    cache_latents: CacheMode = opt("memory", "Encode images with the VAE once, before training, in memory "
                                             "or on disk (reused across runs). Off allows per-step "
                                             "augmentation of pixels.", label="Cache latents")
    cache_text_encoder_outputs: bool = opt(False, "Encode captions once when the text encoder is frozen and "
                                                  "captions are neither shuffled nor dropped.",
                                           label="Cache text-encoder outputs")
    num_processes: int = opt(1, "Processes to train with, one per GPU, over all machines (accelerate launch); "
                                "1 trains on one device.", label="GPUs", ge=1, le=1024)
    num_machines: int = opt(1, "Machines the run spans (accelerate multi-node); each runs num_processes / "
                               "num_machines processes. Start the same run on every machine, each with its "
                               "own machine_rank.", label="Machines", ge=1, le=256)
    machine_rank: int = opt(0, "This machine's index in a multi-machine run: 0 is the main machine, which "
                               "writes the LoRA files, samples and events.", label="Machine rank", ge=0, le=255)
    main_process_ip: str = opt("", "Multi-machine runs: the address of machine 0, reachable from the others.",
                               label="Main machine address", max_length=255)
    main_process_port: int = opt(29500, "Multi-machine runs: a free TCP port on machine 0 for the ranks to "
                                        "meet on.", label="Main machine port", ge=1, le=65535)
    device: Device = opt("auto", "Where to train: auto picks CUDA when present, else the CPU.", label="Device")

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainingSection:
        if self.max_steps is None and self.epochs is None:
            raise ValueError("set max_steps or epochs (or both); neither is set")
        return self

    @model_validator(mode="after")
    def _machines(self) -> TrainingSection:
        if self.num_machines == 1:
            return self
        if self.num_processes % self.num_machines:
            raise ValueError(f"num_processes ({self.num_processes}) must be a multiple of num_machines "
                             f"({self.num_machines}): the same number of GPUs on each machine")
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank ({self.machine_rank}) must be below num_machines ({self.num_machines})")
        if not self.main_process_ip:
            raise ValueError("main_process_ip: set the address of machine 0 for a multi-machine run")
        return self


class ScheduleSection(Section):
    lr_scheduler: Scheduler = opt("constant", "How the learning rate changes over the run.",
                                  label="LR scheduler", basic=True)
    warmup_steps: int = opt(0, "Linear warm-up steps at the start.", label="Warm-up steps", ge=0, le=10_000_000)
    warmup_ratio: float | None = opt(None, "Warm-up as a fraction of all steps (instead of warmup_steps).",
                                     label="Warm-up ratio", ge=0.0, le=1.0)
    num_cycles: int = opt(1, "Restarts of cosine_with_restarts.", label="Cycles", ge=1, le=1000)
    power: float = opt(1.0, "Power of the polynomial scheduler.", label="Polynomial power", gt=0.0, le=100.0)

    @model_validator(mode="after")
    def _one_warmup(self) -> ScheduleSection:
        if self.warmup_ratio is not None and self.warmup_steps:
            raise ValueError("set warmup_steps or warmup_ratio, not both")
        return self


class LossSection(Section):
    min_snr_gamma: float = opt(0.0, "Min-SNR-γ loss weighting (5 is typical; 0 = off).", label="Min-SNR γ",
                               ge=0.0, le=100.0)
    noise_offset: float = opt(0.0, "Noise offset (0.05–0.1 helps very dark/bright images; 0 = off).",
                              label="Noise offset", ge=0.0, le=1.0)
    multires_noise_iterations: int = opt(0, "Pyramid (multires) noise levels (6–10 typical; 0 = off).",
                                         label="Multires noise iterations", ge=0, le=64)
    multires_noise_discount: float = opt(0.3, "Strength decay per multires level.",
                                         label="Multires noise discount", ge=0.0, le=1.0)
    zero_terminal_snr: bool = opt(False, "Rescale the noise schedule to zero terminal SNR (with "
                                         "v-prediction).", label="Zero terminal SNR")


class FlowSection(Section):
    """Flow-matching families (Flux.1): how noise levels are drawn and what the loss compares
    (kohya flux_train_network.py, whose recommended Flux LoRA settings are the defaults here)."""

    timestep_sampling: TimestepSampling = opt(
        "shift", "How noise levels σ are drawn: uniform; sigmoid of a normal (scaled by sigmoid_scale); shift "
                 "(sigmoid, then shifted by discrete_flow_shift); flux_shift (shifted by the image size, as "
                 "Flux was trained).", label="Timestep sampling")
    sigmoid_scale: float = opt(1.0, "Scale of the normal before the sigmoid (sigmoid, shift, flux_shift).",
                               label="Sigmoid scale", gt=0.0, le=100.0)
    discrete_flow_shift: float = opt(3.1582, "Shift of σ towards noise for timestep_sampling = shift.",
                                     label="Flow shift", gt=0.0, le=100.0)
    model_prediction_type: FlowPrediction = opt(
        "raw", "How the model output is read: raw (the velocity), additive (added to the noisy input) or "
               "sigma_scaled (kohya's default for SD3-style training).", label="Model prediction")
    weighting_scheme: FlowWeighting = opt("none", "Loss weight per noise level: none, sigma_sqrt or cosmap.",
                                          label="Loss weighting")
    guidance_scale: float = opt(1.0, "Flux dev: the guidance value fed to the model while training "
                                     "(1.0 as kohya recommends for LoRAs); schnell has no guidance input.",
                                label="Training guidance", ge=0.0, le=100.0)


class SamplePrompt(Section):
    prompt: str = opt(..., "Prompt text.", label="Prompt", min_length=1)
    negative: str = opt("", "Negative prompt.", label="Negative prompt")
    seed: int = opt(42, "Seed of the sample: the same seed shows progress on the same noise.", label="Seed",
                    ge=0, le=2**32 - 1)
    width: int = opt(512, "Width in pixels.", label="Width", ge=64, le=4096, multiple_of=8)
    height: int = opt(512, "Height in pixels.", label="Height", ge=64, le=4096, multiple_of=8)
    steps: int = opt(20, "Denoising steps.", label="Steps", ge=1, le=200)
    guidance: float = opt(7.0, "Classifier-free guidance scale.", label="Guidance", ge=0.0, le=50.0)


class SamplingSection(Section):
    prompts: list[SamplePrompt] = opt([], "Sample prompts, drawn during training with their seeds.",
                                      label="Sample prompts", basic=True, widget="prompts")
    sampler: Sampler = opt("euler_a", "Sampler used for sample images.", label="Sampler")
    every_n_steps: int = opt(0, "Draw samples every N steps (0 = off).", label="Sample every N steps", ge=0,
                                le=10_000_000)
    every_n_epochs: int = opt(0, "Draw samples every N epochs (0 = off).", label="Sample every N epochs", ge=0,
                                 le=100_000)
    sample_at_start: bool = opt(False, "Draw samples before the first step (a baseline).",
                                label="Sample at start")


OUTPUT_NAME_MAX_BYTES = 150


class SavingSection(Section):
    output_name: str = opt("lora", "File name of the LoRA, without extension.", label="Output name",
                           basic=True, pattern=r"^[^/\\:*?\"<>|\x00-\x1f]{1,120}$")
    output_dir: str = opt("", "A folder the final LoRA is also written to, whole or not at all (for scripts: "
                              "kohya's output_dir); created if missing. Relative paths are taken from the "
                              "workspace. The job folder's output/ always has it too.",
                          label="Also save to folder", widget="output_dir")
    every_n_steps: int = opt(0, "Save a checkpoint every N steps (0 = off).", label="Save every N steps", ge=0,
                             le=10_000_000)
    every_n_epochs: int = opt(1, "Save a checkpoint every N epochs (0 = off).", label="Save every N epochs",
                              ge=0, le=100_000)
    keep_last_n: int = opt(0, "Keep only the last N checkpoints (0 keeps all).", label="Keep last N", ge=0, le=100_000)
    save_state: bool = opt(True, "Save resumable state (optimizer, scheduler, RNG, position) with each "
                                 "checkpoint.", label="Save resumable state")
    save_dtype: SaveDtype = opt("fp16", "Precision of the saved LoRA file.", label="Save precision")
    title: str = opt("", "Title stored in the file's metadata.", label="Title")
    author: str = opt("", "Author stored in the file's metadata.", label="Author")
    trigger_words: list[str] = opt([], "Trigger words, stored in the metadata so UIs can show them.",
                                   label="Trigger words")
    description: str = opt("", "Description stored in the metadata.", label="Description", widget="textarea")

    @field_validator("output_name")
    @classmethod
    def _fits_a_file_name(cls, value: str) -> str:
        # File names are limited to 255 bytes, not characters; the name also gets "-step00001234",
        # ".safetensors" and a temporary suffix while it is written.
        size = len(value.encode("utf-8", "surrogatepass"))
        if size > OUTPUT_NAME_MAX_BYTES:
            raise ValueError(f"is {size} bytes in UTF-8; at most {OUTPUT_NAME_MAX_BYTES} fit a file name with "
                             "its suffixes (accented letters and other non-ASCII characters take 2–4 bytes each)")
        return value


class TrainConfig(Section):
    schema_version: int = opt(SCHEMA_VERSION, "Version of this schema; older files are migrated on load.",
                              label="Schema version", ge=1, le=SCHEMA_VERSION)
    model: ModelSection = Field(default_factory=ModelSection)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    optimizer: OptimizerSection = Field(default_factory=OptimizerSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    loss: LossSection = Field(default_factory=LossSection)
    flow: FlowSection = Field(default_factory=FlowSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    saving: SavingSection = Field(default_factory=SavingSection)

    @model_validator(mode="after")
    def _fp8_needs_bypass(self) -> TrainConfig:
        net = self.network
        if self.training.fp8_base and (net.algo not in BYPASS_ALGOS or net.dora):
            what = f"{net.algo} with DoRA" if net.dora else net.algo
            raise ValueError(f"training.fp8_base works with network.algo {', '.join(sorted(BYPASS_ALGOS))} "
                             f"(without DoRA): {what} rebuilds the base weight, which fp8 storage leaves out; "
                             "turn training.fp8_base off or pick one of those")
        return self


SECTIONS: tuple[str, ...] = tuple(name for name in TrainConfig.model_fields if name != "schema_version")
