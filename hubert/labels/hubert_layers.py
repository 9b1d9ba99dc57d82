"""Transformer-layer features of a fairseq HuBERT checkpoint (iteration-2 targets
and the layer sweep), through one forward path.

Layer ``L`` is 1-based (fairseq's ``output_layer``), at the CNN's frame rate
(50 Hz for HuBERT's 320-sample stride); the waveform is layer-normalised only
if the checkpoint's task.normalize; long audio is cut into chunks of
``chunk_samples`` (fairseq's max_chunk). Loading goes through
:func:`hubert.fairseq.checkpoint.load_hubert` (weights_only with fairseq's
Dictionary allowed, nothing else).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def conv_frames(num_samples: int, conv: list[tuple[int, int]]) -> int:
    """Frames out of CNN layers of (kernel, stride) for ``num_samples`` samples (no padding)."""
    n = num_samples
    for kernel, stride in conv:
        n = (n - kernel) // stride + 1
        if n <= 0:
            return 0
    return n


class HubertFeatureReader:
    """Layer ``layer`` (1-based) of a fairseq HuBERT checkpoint; every layer with
    :meth:`get_feats_all_layers`.

    All reads go through :meth:`forward`, HubertModel.forward(features_only=True)
    step by step: fairseq's own modules, with the frame lengths of a padded batch
    carried beside it.
    """

    def __init__(self, checkpoint: str | Path, layer: int, device: str = "cpu", chunk_samples: int = 1_600_000,
                 max_batch_samples: int = 0) -> None:
        from hubert.fairseq.checkpoint import load_hubert

        self.model, self.task_cfg = load_hubert(checkpoint, device)
        n_layers = len(self.model.encoder.layers)
        if not 1 <= layer <= n_layers:
            raise ValueError(f"{checkpoint}: layer {layer} requested but the model has {n_layers} transformer "
                             f"layers; set features.layer to 1..{n_layers}")
        self.layer = layer
        self.device = torch.device(device)
        self.sample_rate = int(self.task_cfg.sample_rate)
        self.normalize = bool(self.task_cfg.normalize)
        self.max_batch_samples = max_batch_samples
        # kernel and stride of each CNN layer, read from the modules (fairseq keeps
        # the spec as a Python string that it eval()s; we do not)
        self.conv = [(blk[0].kernel_size[0], blk[0].stride[0]) for blk in self.model.feature_extractor.conv_layers]
        self.receptive_field = 1
        jump = 1
        for kernel, stride in self.conv:
            self.receptive_field += (kernel - 1) * jump
            jump *= stride
        self.frame_rate = self.sample_rate / jump
        self.dim = int(self.model.encoder.embedding_dim)
        if chunk_samples < self.receptive_field:
            raise ValueError(f"chunk_samples={chunk_samples} is shorter than the CNN's receptive field "
                             f"({self.receptive_field} samples)")
        self.chunk_samples = chunk_samples

    @property
    def n_layers(self) -> int:
        return len(self.model.encoder.layers)

    @property
    def batchable(self) -> bool:
        """Whether padded batches give the same features as one utterance at a time.

        fairseq's ``extractor_mode=default`` CNN normalises its first layer over
        time (GroupNorm with one group per channel), so zero padding changes every
        frame of a shorter utterance; ``layer_norm`` mode normalises each frame on
        its own and padded positions are masked in the transformer.
        """
        return not any(isinstance(m, torch.nn.GroupNorm) for m in self.model.feature_extractor.modules())

    def chunks(self, num_samples: int) -> list[tuple[int, int]]:
        """fairseq's chunking ([0, c), [c, 2c), ...), except that a last piece shorter
        than the receptive field (which fairseq's conv would reject) joins the one before."""
        bounds = [(s, min(s + self.chunk_samples, num_samples)) for s in range(0, num_samples, self.chunk_samples)]
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < self.receptive_field:
            bounds[-2:] = [(bounds[-2][0], num_samples)]
        return bounds

    def num_frames(self, num_samples: int) -> int:
        return sum(conv_frames(e - s, self.conv) for s, e in self.chunks(num_samples))

    def forward(self, source: torch.Tensor, lengths: list[int], last_layer: int) -> list[torch.Tensor]:
        """Transformer layers 1..last_layer of a padded batch.

        source: (batch, samples), prepared (:meth:`_prepare`) and zero-padded;
        lengths: each row's samples. Returns one (batch, frames, dim) tensor per
        layer; row b's frames beyond ``num_frames(lengths[b])`` are padding.
        fairseq derives its frame mask from the sample mask in blocks of
        len // frames samples, which leaves frames that straddle the end of a
        shorter utterance unmasked; the mask here is exact.
        """
        m = self.model
        frames = [conv_frames(n, self.conv) for n in lengths]
        with torch.inference_mode():
            feats = m.forward_features(source).transpose(1, 2)  # (batch, frames, channels)
            feats = m.layer_norm(feats)
            if m.post_extract_proj is not None:
                feats = m.post_extract_proj(feats)
            mask = None
            if min(frames) < feats.size(1):
                positions = torch.arange(feats.size(1), device=self.device)
                mask = positions[None, :] >= torch.tensor(frames, device=self.device)[:, None]  # (batch, frames)
            # layer_results: per layer (output (frames, batch, dim), attention, pre-FFN output)
            _, layer_results = m.encoder(feats, padding_mask=mask, layer=last_layer - 1)
        if len(layer_results) != last_layer:  # layerdrop skips layers in training mode only
            raise RuntimeError(f"the encoder returned {len(layer_results)} layer results for {last_layer} "
                               "layers; is the model in eval mode?")
        return [r[0].transpose(0, 1) for r in layer_results]

    def _prepare(self, waveform: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(waveform), dtype=torch.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a mono waveform (num_samples,), got shape {tuple(x.shape)}")
        if x.numel() < self.receptive_field:
            raise ValueError(f"waveform of {x.numel()} samples is shorter than the CNN's receptive field "
                             f"({self.receptive_field})")
        x = x.to(self.device)
        if self.normalize:  # the model was trained on layer-normalised waveforms (task.normalize)
            x = torch.nn.functional.layer_norm(x, x.shape)
        return x

    def _chunked(self, waveform: np.ndarray, last_layer: int) -> list[torch.Tensor]:
        """One utterance, chunk by chunk: per layer 1..last_layer, (frames, dim)."""
        x = self._prepare(waveform)
        pieces = [self.forward(x[s:e].view(1, -1), [e - s], last_layer) for s, e in self.chunks(x.numel())]
        return [torch.cat([p[i][0] for p in pieces], 0) for i in range(last_layer)]

    def get_feats(self, waveform: np.ndarray) -> np.ndarray:
        """(num_samples,) -> (frames, dim) float32 of layer ``self.layer``."""
        return self._chunked(waveform, self.layer)[-1].float().cpu().numpy()

    def get_feats_all_layers(self, waveform: np.ndarray) -> np.ndarray:
        """(num_samples,) -> (n_layers, frames, dim) float32: every layer from one forward pass
        (``[l - 1]`` equals :meth:`get_feats` of a reader for layer ``l``)."""
        return torch.stack(self._chunked(waveform, self.n_layers)).float().cpu().numpy()

    def get_feats_batch(self, waveforms: list[np.ndarray]) -> list[np.ndarray]:
        """Many utterances -> list of (frames_i, dim), the same values as :meth:`get_feats` each.

        When :attr:`batchable` and max_batch_samples > 0, utterances up to one
        chunk long are padded into batches of at most max_batch_samples padded
        samples (sorted by length to waste little padding); the rest go one by one.
        """
        out: list[np.ndarray | None] = [None] * len(waveforms)
        lengths = [len(w) for w in waveforms]
        single = list(range(len(waveforms)))
        if self.batchable and self.max_batch_samples > 0:
            short = sorted((i for i in single if lengths[i] <= self.chunk_samples), key=lambda i: lengths[i])
            single = [i for i in single if lengths[i] > self.chunk_samples]
            batch: list[int] = []
            for i in short:
                if batch and lengths[i] * (len(batch) + 1) > self.max_batch_samples:
                    self._run_batch(waveforms, batch, out)
                    batch = []
                batch.append(i)
            if batch:
                self._run_batch(waveforms, batch, out)
        for i in single:
            out[i] = self.get_feats(waveforms[i])
        return out  # type: ignore[return-value]

    def _run_batch(self, waveforms: list[np.ndarray], idx: list[int], out: list) -> None:
        xs = [self._prepare(waveforms[i]) for i in idx]
        lengths = [x.numel() for x in xs]
        source = torch.zeros(len(xs), max(lengths), device=self.device)  # (batch, samples)
        for b, x in enumerate(xs):
            source[b, : x.numel()] = x
        feats = self.forward(source, lengths, self.layer)[-1]  # (batch, frames, dim)
        for b, i in enumerate(idx):
            out[i] = feats[b, : conv_frames(lengths[b], self.conv)].float().cpu().numpy()
