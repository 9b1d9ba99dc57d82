"""The built-in bilingual corpus: espeak-ng voices speaking generated English and
Mandarin sentences, with phone alignments from espeak's phoneme events."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from hubert.corpus.alignments import SILENCE, TONE_SEP, merge_intervals
from hubert.corpus.realism import Channel, RealismConfig, apply, draw_channel
from hubert.corpus.records import Candidate
from hubert.corpus.textgen import LANGS, TextGenerator, read_extra_text


# ---------------------------------------------------------------- alignment
def phone_intervals(phones: list[tuple[str, float]], duration: float) -> list[list]:
    """espeak phoneme events (name, start) -> [[phone, start, end], ...] covering [0, duration].

    Stress marks are stripped ('E and ,E are one phone), every pause symbol
    becomes ``sil``, zero-length events (syllable boundaries) are dropped and
    adjacent equal phones merge.
    """
    cleaned: list[tuple[str, float]] = []
    for name, start in phones:
        name = name.lstrip("',").strip() or SILENCE
        if name.startswith("_"):
            name = SILENCE
        cleaned.append((name, min(max(start, 0.0), duration)))
    if not cleaned or cleaned[0][1] > 0:
        cleaned.insert(0, (SILENCE, 0.0))
    ends = [start for _, start in cleaned[1:]] + [duration]
    return merge_intervals((name, start, end) for (name, start), end in zip(cleaned, ends))


# espeak writes a Mandarin syllable's tone as its Chao pitch contour; the tone numbers
# of pinyin name them. The neutral tone is espeak's low 11. The string carries the
# dictionary's tone changes (一个 is yi2 ge5) but not the third-tone sandhi, which espeak
# applies later, when it computes the pitch it speaks (intonation.c, CalcPitches_Tone):
# a 214 before another 214 is spoken 35, a second tone, across syllable and word breaks
# but not across a pause. with_tones applies it the same way, so labels follow the audio.
CHAO_TONES = {"55": "1", "35": "2", "214": "3", "51": "4", "11": "5"}
THIRD, SANDHI = "214", "35"
# espeak's pause mnemonics: "_" and what follows it that is not a letter or digit (_| _: _:: _!)
PAUSE = re.compile(r"_[^\w\s',]*")


def with_tones(phones: list[tuple[str, float]], phoneme_string: str) -> list[tuple[str, float]] | None:
    """espeak's phoneme events with each syllable's tone attached to its nucleus (``'A`` ->
    ``'A/3``), read from espeak's phoneme string of the same text (``m'A214_|``), where the
    tone number follows the nucleus, with espeak's third-tone sandhi applied (你好:
    ``i/2 ... Au/3``). Consonants, codas and pauses keep their names: the tone lives in
    the vowel's pitch. A contour that is none of CHAO_TONES' is kept as espeak wrote it.

    None when the string and the events do not spell the same phonemes, or when espeak
    switched language inside the utterance (``(en)``: a word it does not know in Mandarin,
    spoken with English phones): the utterance then has no alignment rather than a
    wrong one."""
    s, i = phoneme_string, 0

    def skip_marks(i: int) -> int:  # spaces and stress marks between phonemes
        while i < len(s) and s[i] in " ',":
            i += 1
        return i

    cores = [name.lstrip("',") for name, _ in phones]
    contours: list[str] = []
    for core in cores:
        if core.startswith("("):
            return None
        i = skip_marks(i)
        pause = PAUSE.match(s, i)
        if not s.startswith(core, i) and not core.startswith("_") and pause:
            # a pause the string writes and the events do not (they mark it with a zero-length event or not at all)
            i = skip_marks(pause.end())
        if not s.startswith(core, i):
            if core.startswith("_"):  # an end-of-clause pause the string does not write
                contours.append("")
                continue
            return None
        i += len(core)
        digits = re.match(r"\d*", s[i:]).group()
        i += len(digits)
        contours.append(digits)
    spoken = list(contours)
    previous = None  # index of the last toned syllable since the last pause
    for k, (core, contour) in enumerate(zip(cores, contours)):
        if core.startswith("_") and core != "_|":
            previous = None
        elif contour:
            if previous is not None and contours[previous] == THIRD and contour == THIRD:
                spoken[previous] = SANDHI
            previous = k
    return [(f"{name}{TONE_SEP}{CHAO_TONES.get(c, c)}" if c else name, start)
            for (name, start), c in zip(phones, spoken)]


# ---------------------------------------------------------------- synthetic corpus
# Accents and voice variants that sound like speech (espeak's whisper, robot and
# croak variants are left out). Mandarin has one accent: the variants carry the
# speaker differences.
EN_ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
ZH_ACCENTS = ["cmn"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie", "Alex", "Lee",
            "adam", "david", "john", "max", "paul", "robert", "linda", "steph", "belinda", "aunty", "edward",
            "ian", "benjamin", "grandpa", "norbert", "shelby", "travis", "victor", "zac", "michel"]


# Peak (of full scale) above which a synthetic utterance is synthesised again, quieter:
# about 1 dB of headroom for the overshoot of resampling espeak's 22.05 kHz to 16 kHz.
PEAK_LIMIT = 0.89


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    utterances: dict = field(default_factory=lambda: {"en": 600, "zh": 600})
    speakers: dict = field(default_factory=lambda: {"en": 20, "zh": 20})
    rate_wpm: tuple = (130, 200)
    pitch: tuple = (20, 80)
    rate_jitter: int = 10
    pitch_jitter: int = 8
    extra_text: str | None = None
    extra_share: float = 0.2
    # Seeded white noise added to every utterance (RMS in dBFS): espeak's pauses
    # are digital zeros, which no microphone records and which give log-mel
    # features a degenerate floor. None turns it off.
    noise_dbfs: float | None = -65.0
    # espeak's volume (0..200). At 75 its loudest variant (paul) saturates
    # 16 bits; an utterance that peaks above PEAK_LIMIT is synthesised again
    # at 2/3 the volume.
    volume: int = 75
    # Recording conditions per voice (channel, room) and utterance (noise); off by default.
    realism: RealismConfig = field(default_factory=RealismConfig)


@dataclass(frozen=True)
class Speaker:
    id: str
    lang: str
    voice: str
    rate: int
    pitch: int


def synthetic_speakers(cfg: SyntheticConfig) -> list[Speaker]:
    """Distinct voices per language: accent x variant, each with its own rate and pitch."""
    out = []
    for li, lang in enumerate(LANGS):
        rng = random.Random(cfg.seed * 7919 + li)
        accents = EN_ACCENTS if lang == "en" else ZH_ACCENTS
        combos = [(a, v) for a in accents for v in VARIANTS]
        n = int(cfg.speakers.get(lang, 0))
        if n > len(combos):
            raise ValueError(f"corpus.synthetic.speakers.{lang}={n} exceeds the {len(combos)} distinct voices"
                             " available")
        for k, (accent, variant) in enumerate(rng.sample(combos, n)):
            out.append(Speaker(f"{lang}_spk{k:03d}", lang, f"{accent}+{variant}",
                               rng.randint(*cfg.rate_wpm), rng.randint(*cfg.pitch)))
    return out


def synthetic_candidates(cfg: SyntheticConfig) -> Iterator[Candidate]:
    """Yield synthesised utterances, deterministic from cfg.seed.

    Utterances are dealt to speakers round-robin; each jitters its speaker's
    rate and pitch. One espeak-ng instance per process (it has global state).
    """
    from hubert.corpus.espeak import Espeak

    unknown = sorted(set(cfg.utterances) - set(LANGS))
    if unknown:
        raise ValueError(f"corpus.synthetic.utterances: unknown language(s) {unknown}; expected {LANGS}")
    extra = read_extra_text(cfg.extra_text) if cfg.extra_text else []
    speakers = synthetic_speakers(cfg)
    engine = Espeak()
    # a second engine translates text to phonemes: translating in the synthesising engine
    # would change its state, and so the audio of every later utterance
    translator = Espeak()
    channels: dict[str, Channel] = {}
    for li, lang in enumerate(LANGS):
        n = int(cfg.utterances.get(lang, 0))
        voices = [s for s in speakers if s.lang == lang]
        if n and not voices:
            raise ValueError(f"corpus.synthetic.speakers.{lang} must be > 0 when utterances.{lang} > 0")
        text_gen = TextGenerator(cfg.seed * 7919 + 101 + li, extra, cfg.extra_share)
        rng = random.Random(cfg.seed * 7919 + 202 + li)
        for i in range(n):
            spk = voices[i % len(voices)]
            text = text_gen.sentence(lang)
            rate = spk.rate + rng.randint(-cfg.rate_jitter, cfg.rate_jitter)
            pitch = min(99, max(0, spk.pitch + rng.randint(-cfg.pitch_jitter, cfg.pitch_jitter)))
            syn = engine.synthesize(text, spk.voice, rate, pitch, volume=cfg.volume)
            volume = cfg.volume
            while np.abs(syn.waveform).max() > PEAK_LIMIT and volume > 10:
                # espeak saturated, or nearly (its loudest variant, paul, at low pitch), and resampling to
                # 16 kHz overshoots such peaks: say it again quieter rather than keep flattened peaks.
                # Deterministic: same text, voice and engine state order.
                volume = volume * 2 // 3
                syn = engine.synthesize(text, spk.voice, rate, pitch, volume=volume)
            wav = syn.waveform
            if cfg.realism.enabled:
                if spk.id not in channels:
                    channels[spk.id] = draw_channel(cfg.realism, np.random.default_rng(
                        [cfg.seed, 7, li, speakers.index(spk)]), syn.sample_rate)
                noise_rng = np.random.default_rng([cfg.seed, 8, li, i])
                wav = apply(wav, syn.sample_rate, channels[spk.id], float(noise_rng.uniform(*cfg.realism.snr_db)),
                            noise_rng)
            if cfg.noise_dbfs is not None:
                noise = np.random.default_rng([cfg.seed, li, i]).standard_normal(len(wav), dtype=np.float32)
                wav = wav + noise * np.float32(10 ** (cfg.noise_dbfs / 20))
            phones, problem = syn.phones, None
            if lang == "zh":
                phones = with_tones(syn.phones, translator.phonemes(text, spk.voice))
                if phones is None:
                    problem = (f"text {text!r}: espeak switched language inside it (a word it does not know in "
                               "Mandarin), or its phoneme string and phoneme events differ, so the syllables' tones "
                               "cannot be placed; the utterance is kept without an alignment (remove or rewrite "
                               "the sentence in corpus.synthetic.extra_text)")
            yield Candidate(id=f"{spk.id}_{i:05d}", lang=lang, speaker=spk.id, source=f"espeak:{spk.voice}",
                            text=text, waveform=wav, sample_rate=syn.sample_rate, phones=phones,
                            voice=f"{spk.voice} rate={rate} pitch={pitch}", alignment_problem=problem)
