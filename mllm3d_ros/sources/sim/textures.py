"""Procedural albedo textures (wood grain, fabric, floor planks, cardboard, mottled paint) and the sRGB
transfer function the renderer shades in.

Part of the simulator (`mllm3d_ros.sources.simulator` re-exports the public names)."""

from __future__ import annotations

import numpy as np

from .scene import Texture

_TEXTURE_SIZE = 256
_TEXELS_PER_M = 256.0  # textures tile every metre


# --- rendering -------------------------------------------------------------------------------

def _periodic_noise(rng: np.random.Generator, size: int, sigma_u: float, sigma_v: float) -> np.ndarray:
    """Tileable smooth noise (std 1): white noise low-passed in the Fourier domain (texel units)."""
    white = rng.standard_normal((size, size))
    fv = np.fft.fftfreq(size)[:, None]
    fu = np.fft.fftfreq(size)[None, :]
    gain = np.exp(-2 * np.pi ** 2 * ((fu * sigma_u) ** 2 + (fv * sigma_v) ** 2))
    noise = np.real(np.fft.ifft2(np.fft.fft2(white) * gain))
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _make_textures(seed: int = 7) -> np.ndarray:
    """(len(Texture), N, N) float32 albedo modulations, roughly in [-1, 1]; rows are v, columns u."""
    rng = np.random.default_rng(seed)
    n = _TEXTURE_SIZE
    v = np.arange(n)[:, None] / n
    u = np.arange(n)[None, :] / n
    out = np.zeros((len(Texture), n, n), np.float32)
    out[Texture.MOTTLE] = 0.7 * _periodic_noise(rng, n, 12, 12) + 0.3 * _periodic_noise(rng, n, 2, 2)
    # wood: growth rings seen side-on, warped by noise stretched along the grain (u)
    warp = _periodic_noise(rng, n, 40, 6)
    grain = np.sin(2 * np.pi * (14 * v + 0.6 * warp))
    streaks = _periodic_noise(rng, n, 30, 1.0)
    out[Texture.WOOD] = 0.6 * grain + 0.4 * streaks
    weave = np.sin(2 * np.pi * 64 * u) * np.sin(2 * np.pi * 64 * v)
    out[Texture.FABRIC] = 0.35 * weave + 0.45 * _periodic_noise(rng, n, 1.0, 1.0) + 0.4 * _periodic_noise(rng, n, 20, 20)
    # floor planks 12.5 cm wide, each with its own shade and one staggered joint per tile
    plank_rows = (v[:, 0] * 8).astype(int)
    shade = rng.uniform(-0.8, 0.8, 8)[plank_rows][:, None]
    joints = rng.uniform(0, 1, 8)[plank_rows][:, None]
    seam = (np.abs((v * 8) % 1 - 0.0) < 0.02) | (np.abs(u - joints) < 0.004)
    planks = 0.5 * shade + 0.5 * (0.6 * np.sin(2 * np.pi * (40 * v + 0.5 * warp)) + 0.4 * streaks)
    out[Texture.PLANKS] = np.where(seam, -2.5, planks)
    out[Texture.CARDBOARD] = 0.6 * _periodic_noise(rng, n, 6, 6) + 0.25 * np.sin(2 * np.pi * 128 * u) + 0.3 * _periodic_noise(rng, n, 1, 1)
    return out


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.power(np.asarray(c, np.float32) / 255.0, 2.2)
