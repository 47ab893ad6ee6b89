"""The training loop, top to bottom.

prepare(): checks before anything heavy → text encoders (encode captions and sample prompts, then
free them when frozen and cached) → VAE (cache latents, then free it) → UNet → adapters → optimizer
and schedule → resume. The three models never sit in memory together when caching is on.
train(): steps until the end, honouring stop / save_now / sample_now between steps, sampling and
saving on schedule, then the final file in output/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from pathlib import Path
from typing import Any

import torch

from backend.models.registry import get_family
from backend.training import checks, cuda
from backend.training.cache import LatentCache, TextCache
from backend.training.compile import compile_repeated_blocks, compiled_graphs
from backend.training.data import (
    CaptionRules,
    build_train_data,
    caption_rules,
    load_batch,
    process_caption,
    sample_rng,
    size_conditioning,
)
from backend.training.distributed import ranks_of
from backend.training.fp8 import store_linear_weights_in_fp8
from backend.training.frozen_conv import use_frozen_conv_paths
from backend.training.lean_geglu import use_lean_geglu
from backend.training.memory import map_large_blocks, release_freed
from backend.training.metadata import RunInfo, build_metadata
from backend.training.networks import build_network, load_initial_weights
from backend.training.optim import build_optimizer, build_scheduler, warmup_steps
from backend.training.report import Reporter
from backend.training.sampling import draw_samples, prepare_prompts
from backend.training.saving import (
    STATE_SUFFIX,
    checkpoint_name,
    copy_into,
    latest_state,
    prune_checkpoints,
    save_dtype,
    save_lora_file,
)
from backend.training.state import (
    Position,
    load_state,
    resume_from_main,
    rng_states,
    save_state,
    set_rng_states,
)

log = logging.getLogger(__name__)
VAE_BATCH = 4
# On the CPU, 2 images at a time in channels-last layout encode 16 images of 128 px in 2.7 s instead of
# 3.7 s (4 at a time, contiguous): oneDNN's convolutions run natively in that layout.
VAE_BATCH_CPU = 2


class Trainer:
    def __init__(self, cfg: Any, ctx: Any):
        self.cfg = cfg
        self.ctx = ctx
        self.family = get_family(cfg.model.family)
        self.source = None  # the model, opened once in prepare() (backend.models.components.ModelSource)
        self.te = self.vae = self.unet = self.network = None
        self.text_cache: TextCache | None = None
        self.latent_cache: LatentCache | None = None
        self.prompts: list = []
        self.pos = Position()
        self.timings: dict[str, float] = {}

    # -- setup ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        cfg, fam = self.cfg, self.family
        t = time.monotonic()
        import diffusers.models  # noqa: F401 - the libraries every run needs, timed on their own
        import lycoris.kohya  # noqa: F401
        self.timings["imports_s"] = time.monotonic() - t
        t0 = time.monotonic()
        self.source = src = fam.open(cfg.model)
        self.data = build_train_data(cfg)
        self.device = checks.pick_device(cfg)
        checks.before_start(cfg, self.data, self.device.type, src)
        from accelerate import Accelerator

        self.acc = Accelerator(mixed_precision=cfg.training.mixed_precision,
                               gradient_accumulation_steps=cfg.training.gradient_accumulation_steps,
                               cpu=self.device.type == "cpu")
        self.device = self.acc.device
        self.is_main = self.acc.is_main_process and self.ctx.is_main_process
        self.ranks = ranks_of(self.acc)
        self.device_info = cuda.configure(self.device)  # TF32 on Ampere+ (see training.cuda)
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.training.mixed_precision,
                                                                                torch.float32)
        self.rules = caption_rules(cfg)
        self.train_te = cfg.network.train_text_encoder
        self.cache_te = checks.text_cache_allowed(cfg, self.rules, log, fam.caches_text_outputs)
        # On a GPU, loss reads are batched (a read waits for the device); on the CPU nothing is gained.
        self.reporter = Reporter(self.ctx, 0, self.device.type, metric_every=10 if self.device.type == "cuda" else 1)
        torch.manual_seed(cfg.training.seed)

        # Text encoders: load them only when something must be encoded (a warm disk cache needs none).
        cache_dir = self.ctx.paths.root / "cache"
        on_disk = cfg.training.cache_latents == "disk"
        prompt_texts = [t for p in cfg.sampling.prompts for t in (p.prompt, p.negative)]
        self.ranks.cache_turn(filled=False, on_disk=on_disk)  # the disk caches are filled by one rank
        if self.cache_te:
            self.text_cache = TextCache(cache_dir / "text" if on_disk else None,
                                        fam.text_encoder_identity(src), cfg.model.clip_skip)
            texts = {process_caption(it.caption, self.rules, sample_rng(0, 0, 0)) for it in self.data.items}
            todo = self.text_cache.missing([*texts, *prompt_texts])
        else:
            todo = prompt_texts
        if self.train_te or not self.cache_te or todo:
            te_dtype = torch.float32 if self.train_te else self.weight_dtype
            self.te = fam.load_text_encoders(src, device=self.device, dtype=te_dtype, frozen_dtype=self.weight_dtype)
        self.timings["load_text_encoder_s"] = time.monotonic() - t0
        t1 = time.monotonic()
        if self.text_cache is not None:
            self.text_cache.fill(todo, self._encode_frozen)
            self.reporter.phase("cache_text", done=len(texts), total=len(texts), reused=self.text_cache.reused)
            self.prompts = prepare_prompts(cfg.sampling.prompts, lambda t: self.text_cache.get(t))
            if not self.train_te:
                self.te = None
                release_freed()
        else:
            self.prompts = prepare_prompts(cfg.sampling.prompts, self._encode_frozen)
        self.timings["cache_text_s"] = time.monotonic() - t1

        # VAE: cache latents, then keep it only to decode samples (or to encode every step).
        t2 = time.monotonic()
        todo_latents: list = []
        if cfg.training.cache_latents != "off":
            vae_id = fam.vae_identity(src)
            self.latent_cache = LatentCache(cfg.training.cache_latents, cache_dir / "latents" if on_disk else None,
                                            vae_id)
            todo_latents = self.latent_cache.plan(self.data.items, [False, True] if cfg.dataset.flip_aug else [False])
        if cfg.training.cache_latents == "off" or todo_latents or self.prompts:
            self.vae = fam.load_vae(src, device=self.device, dtype=torch.float32)
            if self.device.type == "cpu":
                self.vae.to(memory_format=torch.channels_last)
        self.timings["load_vae_s"] = time.monotonic() - t2
        t3 = time.monotonic()
        if self.latent_cache is not None:
            self.latent_cache.fill(todo_latents, self._encode_pixels,
                                   VAE_BATCH_CPU if self.device.type == "cpu" else VAE_BATCH,
                                   lambda done, total: self.reporter.phase("cache_latents", done=done, total=total),
                                   workers=cfg.dataset.num_workers)
            log.info("latents: %d encoded, %d reused from the cache", self.latent_cache.encoded,
                     self.latent_cache.reused)
            if self.vae is not None and self.prompts:
                self.vae.encoder = None  # decoding samples needs only the decoder
            else:
                self.vae = None
            release_freed()
        self.timings["cache_latents_s"] = time.monotonic() - t3
        self.ranks.cache_turn(filled=True, on_disk=on_disk)

        # UNet, adapters, optimizer, schedule.
        if self.device.type == "cpu":
            map_large_blocks()  # the step's activations live in the heap here (see training.memory)
        t4 = time.monotonic()
        fp8 = cfg.training.fp8_base  # then quantized on the host: the bf16 model never has to fit on the card
        self.unet = fam.load_unet(src, device="cpu" if fp8 else self.device, dtype=self.weight_dtype)
        if self.device.type == "cpu":
            use_frozen_conv_paths(self.unet)  # lighter and faster frozen convolutions (see frozen_conv)
            use_lean_geglu(self.unet)
        if fp8:  # before the adapters wrap the layers' forwards
            stored = store_linear_weights_in_fp8(self.unet)
            self.unet.to(self.device)
            self.device_info["fp8_base"] = {"layers": stored.layers, "bytes_before": stored.bytes_before,
                                            "bytes_after": stored.bytes_after}
        self.timings["load_unet_s"] = time.monotonic() - t4
        t5 = time.monotonic()
        if cfg.training.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            self.unet.train()
        self.noise_scheduler = fam.load_noise_scheduler(src, v_prediction=cfg.model.v_prediction,
                                                        zero_terminal_snr=cfg.loss.zero_terminal_snr)
        self.objective = fam.training_objective(cfg, self.noise_scheduler, src)  # noising and target
        self.network = build_network(cfg.network, fam, self.unet, self.te if self.train_te else None)
        self.network.net.to(self.device, dtype=torch.float32)
        if cfg.training.compile:
            self.device_info["compiled_blocks"] = compile_repeated_blocks(self.unet)
        if cfg.network.network_weights:
            load_initial_weights(self.network, cfg.network.network_weights)
        groups = self.network.param_groups(cfg.optimizer.lr, cfg.network.unet_lr, cfg.network.text_encoder_lr,
                                           cfg.network.text_encoder_2_lr)
        self.optimizer, self.optimizer_desc = build_optimizer(cfg, groups, self.device.type)
        self.steps_per_epoch = max(1, math.ceil(self.data.batches_per_epoch()
                                                / (cfg.training.gradient_accumulation_steps
                                                   * self.acc.num_processes)))
        self.total_steps = cfg.training.max_steps or (cfg.training.epochs or 1) * self.steps_per_epoch
        self.lr_scheduler = build_scheduler(cfg, self.optimizer, self.total_steps)
        # Only the optimizer is prepared (fp16's grad scaler); several ranks average gradients themselves
        # (training.distributed: DDP would never see a forward through the adapter network).
        self.optimizer = self.acc.prepare(self.optimizer)
        self.reporter.total = self.total_steps
        self.run_info = RunInfo(session_id=int(time.time() * 1000) % 2**31, started_at=time.time(),
                                total_steps=self.total_steps,
                                num_epochs=math.ceil(self.total_steps / self.steps_per_epoch),
                                batches_per_epoch=self.data.batches_per_epoch(), optimizer=self.optimizer_desc,
                                warmup_steps=warmup_steps(cfg, self.total_steps),
                                num_processes=self.acc.num_processes, model_variant=src.detected.variant,
                                extra=fam.run_metadata(cfg, src))
        self.digest = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        if self.ctx.resume:
            self._resume()
            self.pos = resume_from_main(self.ranks, optimizer=self.optimizer, scheduler=self.lr_scheduler,
                                        scaler=getattr(self.acc, "scaler", None), pos=self.pos)
        self.ranks.broadcast_from_main(self.network.trainable_parameters())
        if self.device.type == "cuda":  # progress events report training's own peak from here on
            self.device_info["setup_peak_memory_mb"] = cuda.take_peak(self.device)
        self.timings["setup_s"] = time.monotonic() - t5
        self.reporter.phase("ready", **{k: round(v, 3) for k, v in self.timings.items()},
                            total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch,
                            start_step=self.pos.step, attention=cuda.attention_kinds(self.unet),
                            num_processes=self.acc.num_processes, **self.device_info)

    def _encode_frozen(self, texts: list[str]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.family.encode_prompts(self.te, texts, clip_skip=self.cfg.model.clip_skip)

    def _encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.device.type == "cpu" else torch.preserve_format
        with torch.no_grad():
            latents = self.family.encode_images(self.vae, pixels.to(self.device, torch.float32, memory_format=fmt))
        return latents.contiguous()

    def _resume(self) -> None:
        path = latest_state(self.ctx.checkpoints_dir)
        if path is None and self.ranks.rank != 0:  # another machine's folder: rank 0 sends its state
            log.info("no saved state in %s: continuing from rank 0's", self.ctx.checkpoints_dir)
            return
        if path is None:
            log.warning("resume asked, but no saved state in %s: starting from step 0", self.ctx.checkpoints_dir)
            return
        scaler = getattr(self.acc, "scaler", None)
        self.pos, digest = load_state(path, network=self.network, optimizer=self.optimizer,
                                      scheduler=self.lr_scheduler, scaler=scaler)
        if digest and digest != self.digest:
            log.warning("the config changed since %s was saved; continuing with the new config", path.name)
        log.info("resumed from %s at step %d (epoch %d, batch %d)", path.name, self.pos.step, self.pos.epoch,
                 self.pos.batch)

    # -- one step -------------------------------------------------------------------------------
    def _batch_inputs(self, samples: list) -> tuple[torch.Tensor, dict, dict, torch.Tensor | None]:
        items = [self.data.items[s.item] for s in samples]
        if self.latent_cache is not None:
            latents = torch.stack([self.latent_cache.get(s.item, s.flip) for s in samples])
        else:
            pixels = load_batch([(it, s.flip) for it, s in zip(items, samples, strict=True)],
                                self.cfg.dataset.num_workers)
            latents = self._encode_pixels(pixels)
        # Host → device copies without waiting (a blocking copy waits for the queued GPU work).
        latents = latents.to(self.device, torch.float32, non_blocking=True)
        texts = [self._caption(it.caption, s) for it, s in zip(items, samples, strict=True)]
        if self.text_cache is not None:
            cond = {k: v.to(self.device, self.weight_dtype, non_blocking=True)
                    for k, v in self.text_cache.get(texts).items()}
        elif self.train_te:
            cond = self.family.encode_prompts(self.te, texts, clip_skip=self.cfg.model.clip_skip)
        else:
            cond = self._encode_frozen(texts)
        extra = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                 for k, v in self.family.extra_conditioning(size_conditioning(items)).items()}
        weights = [self.data.loss_weight(it) for it in items]
        weight_t = None if all(w == 1.0 for w in weights) else torch.tensor(weights).to(self.device, non_blocking=True)
        return latents, cond, extra, weight_t

    def _caption(self, raw: str, sample: Any) -> str:
        rules: CaptionRules = self.rules
        return process_caption(raw, rules, sample_rng(self.cfg.training.seed, self.pos.epoch, sample.position))

    def _loss(self, samples: list, micro: int) -> torch.Tensor:
        cfg = self.cfg
        latents, cond, extra, weights = self._batch_inputs(samples)
        seed = (cfg.training.seed * 1_000_003 + self.pos.step * 64 + micro + self.ranks.rank * 7_919) % 2**63
        gen = torch.Generator(device=self.device).manual_seed(seed)
        noised = self.objective.noise(latents, gen, random.Random(seed))  # DDPM or flow (objectives.py)
        with self.acc.autocast():
            pred = self.family.predict(self.unet, noised.noisy.to(self.weight_dtype), noised.timesteps, cond,
                                       {**extra, **noised.model_inputs})
        per_sample = self.objective.per_sample_loss(pred, latents, noised)
        return (per_sample if weights is None else per_sample * weights).mean()

    def _step(self) -> torch.Tensor:
        """One optimizer step over `gradient_accumulation_steps` batches of this process."""
        cfg = self.cfg
        accum = cfg.training.gradient_accumulation_steps
        world, rank = self.acc.num_processes, self.acc.process_index
        batches = self.data.epoch_batches(self.pos.epoch)
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            idx = self.pos.batch + micro * world + rank
            samples = batches[idx % len(batches)]
            with self.acc.accumulate():
                loss = self._loss(samples, micro)
                self.acc.backward(loss)
                if self.acc.sync_gradients:
                    self.ranks.average_gradients(self.network.trainable_parameters())
                if self.acc.sync_gradients and cfg.training.max_grad_norm > 0:
                    # accelerate unscales fp16 gradients (grad scaler) before clipping them
                    self.acc.clip_grad_norm_(self.network.trainable_parameters(), cfg.training.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total = total + loss.detach() / accum
        self.lr_scheduler.step()
        self.pos.batch += accum * world
        self.pos.step += 1
        if self.ranks.several and self.pos.step == 1:  # once: reading it waits for the device
            log.info("step 1: loss %.6f on rank %d of %d (the metric is their mean)", total.item(), rank, world)
        return self.ranks.mean(total)  # the loss over all ranks' batches

    # -- the loop -------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        cfg, ctx = self.cfg, self.ctx
        if cfg.sampling.sample_at_start and self.pos.step == 0:
            self.sample()
        self.network.net.train()
        last_sampled = self.pos.step
        while self.pos.step < self.total_steps:
            stop, save_now, sample_now = self.ranks.requests(ctx)  # the same on every rank
            if stop:
                self.reporter.flush()
                self.save_checkpoint("stop")
                return {"stopped_at": self.pos.step}
            if save_now:
                self.reporter.flush()
                self.save_checkpoint("save_now")
            if sample_now:
                self.sample()
            loss = self._step()  # a CUDA out-of-memory error is explained by run_job
            epoch_ended = self.pos.batch >= len(self.data.epoch_batches(self.pos.epoch))
            self.reporter.step_done(self.pos.step, self.pos.epoch + 1, loss, self._lrs())
            step, s, smp = self.pos.step, cfg.saving, cfg.sampling
            done_epoch = self.pos.epoch + 1
            if epoch_ended:
                self.pos.epoch, self.pos.batch = self.pos.epoch + 1, 0
            final = step >= self.total_steps
            if not final and ((s.every_n_steps and step % s.every_n_steps == 0)
                              or (epoch_ended and s.every_n_epochs and done_epoch % s.every_n_epochs == 0)):
                self.reporter.flush()
                self.save_checkpoint("periodic")
            if (smp.every_n_steps and step % smp.every_n_steps == 0) or \
                    (epoch_ended and smp.every_n_epochs and done_epoch % smp.every_n_epochs == 0):
                self.sample()
                last_sampled = step
        self.reporter.flush()
        if self.prompts and (cfg.sampling.every_n_steps or cfg.sampling.every_n_epochs) \
                and last_sampled != self.pos.step:
            self.sample()
        in_sync = self.ranks.same_everywhere(self.network.trainable_parameters())
        if not in_sync:
            log.error("the ranks ended with different adapter weights; the file holds rank 0's")
        output = self.save_final()
        return {"output": str(output.relative_to(ctx.job_dir)) if output else None, "steps": self.pos.step,
                "final_loss": self.reporter.last_loss,
                **({"ranks_in_sync": in_sync} if self.ranks.several else {}),
                **({"compiled_graphs": compiled_graphs()} if cfg.training.compile else {})}

    def _lrs(self) -> dict[str, float]:
        names = self.network.group_names
        return {n: g["lr"] for n, g in zip(names, self.optimizer.param_groups, strict=False)}

    # -- saving and sampling --------------------------------------------------------------------
    def _metadata(self) -> dict[str, str]:
        return build_metadata(self.cfg, self.family, self.network, self.data, self.run_info,
                              step=self.pos.step, epoch=self.pos.epoch_number)

    def _write_lora(self, path: Path) -> None:
        tensors = self.network.kohya_state_dict(save_dtype(self.cfg.saving.save_dtype))
        save_lora_file(path, tensors, self._metadata())

    def save_checkpoint(self, reason: str) -> Path | None:
        """LoRA file (+ resumable state) in checkpoints/, then prune to keep_last_n."""
        self.acc.wait_for_everyone()
        if not self.is_main:
            return None
        s = self.cfg.saving
        name = checkpoint_name(s.output_name, self.pos.step)
        folder = self.ctx.checkpoints_dir
        lora = folder / f"{name}.safetensors"
        self._write_lora(lora)
        state = None
        if s.save_state or reason == "stop":
            state = folder / f"{name}{STATE_SUFFIX}"
            save_state(state, network=self.network, optimizer=self.optimizer, scheduler=self.lr_scheduler,
                       scaler=getattr(self.acc, "scaler", None), pos=self.pos, config_digest=self.digest)
        prune_checkpoints(folder, s.output_name, s.keep_last_n)
        rel = str(lora.relative_to(self.ctx.job_dir))
        self.ctx.emit("checkpoint", path=rel, step=self.pos.step, epoch=self.pos.epoch_number, reason=reason,
                      state=str(state.relative_to(self.ctx.job_dir)) if state else None)
        log.info("saved %s (%s)", rel, reason)
        return lora

    def save_final(self) -> Path | None:
        self.acc.wait_for_everyone()
        if not self.is_main:
            return None
        out = self.ctx.output_dir / f"{self.cfg.saving.output_name}.safetensors"
        self._write_lora(out)
        rel = str(out.relative_to(self.ctx.job_dir))
        copy = {}
        if self.cfg.saving.output_dir:  # also where the user's scripts look (kohya's output_dir)
            copy["output_copy"] = str(copy_into(out, self.cfg.saving.output_dir))
            log.info("saved a copy as %s", copy["output_copy"])
        self.ctx.emit("checkpoint", path=rel, step=self.pos.step, epoch=self.pos.epoch_number, reason="final",
                      state=None, **copy)
        self.ctx.update_record(output=rel, last_step=self.pos.step, **copy)
        log.info("saved %s", rel)
        return out

    def sample(self) -> None:
        if not self.prompts or not self.is_main or self.vae is None:
            return
        sched = self.family.sampling_scheduler(self.cfg.sampling.sampler, self.noise_scheduler)
        # Samples must not change the run: adapters in eval mode (no dropout), RNG states put back.
        rng = rng_states()
        self.network.net.eval()
        try:
            written = draw_samples(family=self.family, unet=self.unet, vae=self.vae, scheduler=sched,
                                   prompts=self.prompts, step=self.pos.step, out_dir=self.ctx.samples_dir,
                                   device=self.device, dtype=self.weight_dtype, autocast=self.acc.autocast)
        finally:
            self.network.net.train()
            set_rng_states(rng)
        for path, p in written:
            self.ctx.emit("sample", path=str(path.relative_to(self.ctx.job_dir)), prompt=p.prompt, seed=p.seed,
                          step=self.pos.step, index=p.index)
