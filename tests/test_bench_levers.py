"""The lever bench reads the CNN widths of a generated fairseq config."""

import pytest

from bench.pretrain_levers import conv_widths
from hubert.pretrain.params import conv_feature_layers


def test_conv_widths_of_a_fairseq_conv_feature_layers_string():
    assert conv_widths("[(32,10,5), (64,3,2), (64,3,2), (128,3,2), (128,3,2), (128,2,2), (128,2,2)]") == [
        32, 64, 64, 128, 128, 128, 128]
    with pytest.raises(ValueError):
        conv_widths("[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2")


def test_conv_widths_reads_what_the_pretrain_stage_writes():
    widths = [32, 64, 64, 128, 128, 128, 128]
    assert conv_widths(conv_feature_layers(widths)) == widths
