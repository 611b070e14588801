"""Stranger IDs: the same ``unknown-N`` for an unknown person each time they come back within a run.

Pure and thread-free; one ``StrangerBook`` is owned by the pipeline's recognition thread (through the
``TrackVoter``). It remembers, for the run, one template per stranger: the norm-weighted fusion of the
embeddings of the tracks labelled with it.

- A track that is still unknown once it has ``min_embeddings`` kept embeddings asks for a label
  (``claim``): the stranger whose template is most similar to the track's template, when the cosine
  is at least ``threshold`` (the model's matching threshold) and no other running track holds that
  stranger; else a new ``unknown-N`` (N counts up from 1 per run).
- While the track runs (``update``), its template replaces its earlier one in the stranger's, which is
  the fusion of the templates of its tracks (each weighted by its summed feature norms; the last
  ``max_tracks`` tracks), so a stranger follows how the person looks now. A track whose label was
  made for it alone moves to an earlier free stranger as soon as its better template matches one:
  two embeddings of a returning person can look new, five rarely do.
- A track that gets named after all gives its label back (``forget``): a stranger created for it
  alone is deleted, so a known person never leaves a stranger behind.

Memory is bounded: past ``max_strangers`` the least recently seen stranger is forgotten.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from stream.types import TrackKey

__all__ = ["StrangerBook", "StrangerSettings"]

PREFIX = "unknown-"


@dataclass(frozen=True, slots=True)
class StrangerSettings:
    """threshold: least cosine between a track's template and a stranger's to reuse the label.
    min_embeddings: kept embeddings a track needs before it is labelled. max_strangers: memory bound."""

    threshold: float
    min_embeddings: int = 2
    max_strangers: int = 10_000
    max_tracks: int = 20

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and -1.0 <= self.threshold <= 1.0):
            raise ValueError(f"StrangerSettings.threshold: must be in [-1, 1], got {self.threshold}")
        for name in ("min_embeddings", "max_strangers", "max_tracks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"StrangerSettings.{name}: must be an integer >= 1, got {value!r}")


@dataclass(slots=True)
class _Stranger:
    parts: OrderedDict[TrackKey, tuple[np.ndarray, float]] = field(default_factory=OrderedDict)
    template: np.ndarray | None = None  # unit float32: the weighted fusion of the parts
    holder: TrackKey | None = None  # the running track labelled with it, if any


class StrangerBook:
    """The run's strangers (see the module notes)."""

    def __init__(self, settings: StrangerSettings) -> None:
        self.settings = settings
        self._strangers: OrderedDict[str, _Stranger] = OrderedDict()  # least recently seen first
        self._next = 1

    def __len__(self) -> int:
        return len(self._strangers)

    def claim(self, track: TrackKey, template: np.ndarray, weight: float) -> str:
        """The label for an unknown ``track`` with this unit ``template`` (summed norms ``weight``)."""
        label = self._best_free(template)
        if label is None:
            label = f"{PREFIX}{self._next}"
            self._next += 1
            self._strangers[label] = _Stranger()
            self._bound()
        stranger = self._strangers[label]
        stranger.holder = track
        self._absorb(label, stranger, track, template, weight)
        return label

    def update(self, label: str, track: TrackKey, template: np.ndarray, weight: float) -> str:
        """``track``'s template changed: it replaces the track's part of its stranger. Returns the label
        the track carries from now on: its own, or — when its own stranger is its alone (made for it)
        and an earlier free stranger now matches its better template — that earlier one (the own label
        is then dropped: a returning person first judged new is recognised once the evidence is in)."""
        stranger = self._strangers.get(label)
        if stranger is None:
            return label
        if set(stranger.parts) <= {track}:
            earlier = self._best_free(template, exclude=label)
            if earlier is not None:
                del self._strangers[label]
                label, stranger = earlier, self._strangers[earlier]
                stranger.holder = track
        self._absorb(label, stranger, track, template, weight)
        return label

    def _absorb(self, label: str, stranger: _Stranger, track: TrackKey, template: np.ndarray, weight: float) -> None:
        stranger.parts[track] = (np.asarray(template, np.float32), max(float(weight), 1e-6))
        stranger.parts.move_to_end(track)
        while len(stranger.parts) > self.settings.max_tracks:
            stranger.parts.popitem(last=False)
        _refresh(stranger)
        self._strangers.move_to_end(label)

    def release(self, label: str, track: TrackKey) -> None:
        """``track`` ended still unknown: the label is free for the next track that matches it."""
        stranger = self._strangers.get(label)
        if stranger is not None and stranger.holder == track:
            stranger.holder = None

    def forget(self, label: str, track: TrackKey) -> None:
        """``track`` turned out to be a known person: drop its claim, and the stranger if it was its own."""
        stranger = self._strangers.get(label)
        if stranger is None:
            return
        stranger.parts.pop(track, None)
        if stranger.holder == track:
            stranger.holder = None
        if stranger.parts:
            _refresh(stranger)
        else:
            del self._strangers[label]

    # -- steps ------------------------------------------------------------------------------------

    def _best_free(self, template: np.ndarray, exclude: str | None = None) -> str | None:
        labels: list[str] = []
        templates: list[np.ndarray] = []
        for label, stranger in self._strangers.items():
            if stranger.holder is None and stranger.template is not None and label != exclude:
                labels.append(label)
                templates.append(stranger.template)
        if not labels:
            return None
        scores = np.stack(templates) @ np.asarray(template, np.float32)
        best = int(np.argmax(scores))
        return labels[best] if float(scores[best]) >= self.settings.threshold else None

    def _bound(self) -> None:
        while len(self._strangers) > self.settings.max_strangers:
            label = next((k for k, s in self._strangers.items() if s.holder is None), None)
            if label is None:
                return
            del self._strangers[label]


def _refresh(stranger: _Stranger) -> None:
    """The stranger's template: normalize(Σ weightᵢ · templateᵢ) over its tracks' parts."""
    mixed = np.sum([t * w for t, w in stranger.parts.values()], axis=0)
    length = float(np.linalg.norm(mixed))
    stranger.template = (mixed / length).astype(np.float32) if length > 0 else None
