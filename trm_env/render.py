"""The ``rgb_array`` picture of an episode so far, drawn with numpy alone (nothing runs unless asked).

Layout, one column per recursion step 1..K (CELL pixels wide), top to bottom:

- C rows: the class probabilities p_t as a heat map (white 0 .. dark blue 1); steps not yet taken stay grey;
- the label's row carries a green tick at its left edge;
- one row: the halt head's probability as a bar (orange) per step;
- a red frame marks the current step; once halted, the committed answer's cell is framed green when it is
  the label and red when not.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CELL", "episode_frame"]

CELL, MARGIN = 12, 6
WHITE, GREY, BLUE = np.array([255, 255, 255]), np.array([200, 200, 200]), np.array([20, 60, 160])
ORANGE, GREEN, RED = np.array([235, 140, 20]), np.array([30, 160, 60]), np.array([210, 30, 30])


def _frame_cell(image: np.ndarray, row: int, col: int, color: np.ndarray) -> None:
    top, left = MARGIN + row * CELL, MARGIN + col * CELL
    image[top : top + CELL, [left, left + CELL - 1]] = color
    image[[top, top + CELL - 1], left : left + CELL] = color


def episode_frame(probs: np.ndarray, halt_probs: np.ndarray, label: int, max_steps: int, committed: bool
                  ) -> np.ndarray:  # fmt: skip
    """An (H, W, 3) uint8 picture of the steps taken so far: ``probs`` (t, C), ``halt_probs`` (t,)."""
    steps, classes = probs.shape
    height, width = 2 * MARGIN + (classes + 1) * CELL, 2 * MARGIN + max_steps * CELL
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    grid = np.broadcast_to(GREY, (classes + 1, max_steps, 3)).astype(float)
    grid[:classes, :steps] = WHITE + probs.T[..., None] * (BLUE - WHITE)
    grid[classes, :steps] = WHITE
    cells = np.repeat(np.repeat(grid, CELL, axis=0), CELL, axis=1)
    image[MARGIN : height - MARGIN, MARGIN : width - MARGIN] = cells.astype(np.uint8)
    bar_bottom = MARGIN + (classes + 1) * CELL - 1
    for t, p in enumerate(halt_probs):
        top = bar_bottom - round(float(p) * (CELL - 2))
        image[top:bar_bottom, MARGIN + t * CELL + 2 : MARGIN + (t + 1) * CELL - 2] = ORANGE
    image[MARGIN + label * CELL + 2 : MARGIN + (label + 1) * CELL - 2, 1 : MARGIN - 1] = GREEN
    current = steps - 1
    if committed:
        answer = int(np.argmax(probs[current]))
        _frame_cell(image, answer, current, GREEN if answer == label else RED)
    else:
        for row in range(classes + 1):
            _frame_cell(image, row, current, RED)
    return image
