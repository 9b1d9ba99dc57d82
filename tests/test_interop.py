"""Our pretraining checkpoint in other toolkits: fairseq's own loader and
torchaudio (import_fairseq_model) give the same layer outputs as
hubert.labels.hubert_layers.HubertFeatureReader."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from tests._pretrain_fixtures import resumed_run

pytestmark = pytest.mark.slow
TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_corpus, tiny_manifests):
    run = resumed_run(tmp_path_factory, tiny_corpus, tiny_manifests)
    assert run.second[0] == 0, run.second[1][-3000:]
    return run.clone / "data/pretrain/iter1/checkpoint.pt"


@pytest.fixture(scope="module")
def waveform(tiny_corpus) -> np.ndarray:
    path = sorted((tiny_corpus / "audio").rglob("*.wav"))[0]
    data, rate = sf.read(path, dtype="float32")
    assert rate == 16000 and data.ndim == 1
    return data


def test_fairseq_torchaudio_and_our_reader_give_the_same_layers(checkpoint, waveform, monkeypatch, tmp_path):
    from fairseq import checkpoint_utils
    from torchaudio.models.wav2vec2.utils import import_fairseq_model

    from hubert.fairseq.checkpoint import allowed_globals
    from hubert.labels.hubert_layers import HubertFeatureReader

    monkeypatch.chdir(tmp_path)  # loading needs neither the clone's data nor its working directory
    with torch.serialization.safe_globals(allowed_globals()):
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)])
    fairseq_model = models[0].eval()
    assert type(fairseq_model).__name__ == "HubertModel" and len(task.dictionaries[0]) == 20 + 4
    torchaudio_model = import_fairseq_model(fairseq_model).eval()
    x = torch.from_numpy(waveform)[None]  # (1, samples); task.normalize is false: raw waveform
    layers = len(fairseq_model.encoder.layers)
    assert layers == 2
    with torch.inference_mode():
        ta_layers, _ = torchaudio_model.extract_features(x, num_layers=layers)
    for layer in range(1, layers + 1):
        ours = HubertFeatureReader(checkpoint, layer).get_feats(waveform)
        with torch.inference_mode():
            theirs, _ = fairseq_model.extract_features(source=x, padding_mask=None, mask=False, output_layer=layer)
        theirs = theirs[0].numpy()
        assert ours.shape == theirs.shape == (ta_layers[layer - 1].shape[1], 64)
        np.testing.assert_allclose(ours, theirs, atol=TOL, rtol=0)
        np.testing.assert_allclose(ours, ta_layers[layer - 1][0].numpy(), atol=TOL, rtol=0)
    # the layers differ from each other: the comparison is not of a constant
    assert not np.allclose(HubertFeatureReader(checkpoint, 1).get_feats(waveform),
                           HubertFeatureReader(checkpoint, 2).get_feats(waveform), atol=1e-2)
