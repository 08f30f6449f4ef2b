"""A seeded MovieLens-like generator with learnable structure, and a group of users worth forgetting."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .core import RecData


GENRES = (
    "Action", "Adventure", "Animation", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Horror", "Musical",
    "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip

# Title words carry the genre, as real titles often do, so that a small language model can learn tastes from text.
_GENRE_WORDS = {
    "Action": ("Fury", "Strike", "Bullet", "Rampage", "Velocity"),
    "Adventure": ("Quest", "Voyage", "Treasure", "Expedition", "Journey"),
    "Animation": ("Toon", "Doodle", "Pixel", "Bunny", "Balloon"),
    "Comedy": ("Laughs", "Goofball", "Prank", "Blunder", "Giggles"),
    "Crime": ("Heist", "Mobster", "Alibi", "Racket", "Getaway"),
    "Documentary": ("Chronicle", "Witness", "Archive", "Portrait", "Record"),
    "Drama": ("Tears", "Promise", "Letters", "Harvest", "Silence"),
    "Fantasy": ("Dragon", "Wizard", "Enchanted", "Realm", "Sorcery"),
    "Horror": ("Haunting", "Crypt", "Scream", "Nightmare", "Possessed"),
    "Musical": ("Melody", "Chorus", "Rhythm", "Serenade", "Ballad"),
    "Mystery": ("Riddle", "Clue", "Enigma", "Cipher", "Vanishing"),
    "Romance": ("Kiss", "Sweetheart", "Valentine", "Darling", "Honeymoon"),
    "Sci-Fi": ("Galaxy", "Android", "Orbit", "Nebula", "Cyborg"),
    "Thriller": ("Pursuit", "Hostage", "Deadline", "Paranoia", "Ransom"),
    "War": ("Trenches", "Battalion", "Frontline", "Siege", "Armistice"),
    "Western": ("Outlaw", "Saloon", "Sheriff", "Canyon", "Rustler"),
}
_NICHE_WORDS = (
    "Obscura", "Monolith", "Vesper", "Lacuna", "Reverie", "Palimpsest", "Ennui", "Tableau", "Elegy", "Liminal",
    "Umbra", "Vignette", "Aporia", "Kenosis", "Sfumato", "Chiaroscuro",
)  # fmt: skip
_SYLLABLES = ("ka", "lo", "mi", "ra", "zen", "tor", "vi", "shu", "pel", "dor", "nix", "bal", "quo", "fen", "gar", "wyn")


def make_synthetic(
    num_users: int = 300,
    num_items: int = 240,
    interactions_per_user: int = 40,
    niche_user_fraction: float = 0.1,
    niche_item_fraction: float = 0.15,
    niche_share: float = 0.5,
    noise: float = 0.5,
    taste_strength: float = 1.5,
    quality_strength: float = 1.0,
    user_bias_strength: float = 1.2,
    seed: int = 0,
) -> RecData:
    """
    Generate MovieLens-like ratings with latent tastes, item popularity, and an optional group of *niche* users.

    Regular users have tastes over genres; an item's rating is the user's taste for the item's genres plus the item's
    quality and Gaussian noise, mapped to 1–5 stars (like = rating > 3). Niche users (`niche_user_fraction` of users)
    rate regular items the same way, but a `niche_share` of their ratings go to *niche items* that nobody else rates,
    whose likes follow a per-item quality only these users reveal. A recommender can only know those items from the
    niche users' data, which makes them the users whose deletion is measurable: their group label is `"niche"` in
    `RecData.user_groups`.

    Args:
        num_users (`int`, *optional*, defaults to `300`): number of users.
        num_items (`int`, *optional*, defaults to `240`): number of items, niche items included.
        interactions_per_user (`int`, *optional*, defaults to `40`): mean ratings per user (Poisson, at least 12).
        niche_user_fraction (`float`, *optional*, defaults to `0.1`): share of users with niche tastes (0 disables).
        niche_item_fraction (`float`, *optional*, defaults to `0.15`): share of items only niche users rate.
        niche_share (`float`, *optional*, defaults to `0.5`): share of a niche user's ratings that go to niche items.
        noise (`float`, *optional*, defaults to `0.5`): standard deviation of the rating noise.
        taste_strength (`float`, *optional*, defaults to `1.5`): weight of the user's genre tastes in a rating.
        quality_strength (`float`, *optional*, defaults to `1.0`): standard deviation of the items' quality.
        user_bias_strength (`float`, *optional*, defaults to `1.2`): standard deviation of the users' generosity (some
            users rate everything high, others are harsh), visible in the share of liked items in their history.
        seed (`int`, *optional*, defaults to `0`): the generator is a pure function of its arguments.
    """
    for name, value in (("num_users", num_users), ("num_items", num_items)):
        if value < 4:
            raise ValueError(f"`{name}` must be >= 4, got {value}.")
    for name, value in (
        ("niche_user_fraction", niche_user_fraction),
        ("niche_item_fraction", niche_item_fraction),
        ("niche_share", niche_share),
    ):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"`{name}` must be in [0, 1), got {value}.")
    rng = np.random.default_rng(seed)
    n_genres = len(GENRES)

    num_niche_items = int(round(num_items * niche_item_fraction)) if niche_user_fraction > 0 else 0
    num_regular = num_items - num_niche_items
    item_ids = [str(i + 1) for i in range(num_items)]
    genre_matrix = np.zeros((num_items, n_genres))
    titles, genres = [], []
    used_titles: set[str] = set()
    for i in range(num_items):
        if i < num_regular:
            k = rng.choice([1, 1, 2, 2, 3])
            gidx = rng.choice(n_genres, size=k, replace=False)
            genre_matrix[i, gidx] = 1.0
            words = [rng.choice(_GENRE_WORDS[GENRES[g]]) for g in gidx]
            genres.append("|".join(GENRES[g] for g in sorted(gidx)))
        else:
            words = list(rng.choice(_NICHE_WORDS, size=2, replace=False))
            genres.append("Arthouse")
        titles.append(_unique_title(rng, words, used_titles))
    quality = rng.normal(0.0, quality_strength, size=num_items)
    popularity = np.exp(rng.normal(0.0, 0.8, size=num_regular))
    popularity /= popularity.sum()

    num_niche_users = int(round(num_users * niche_user_fraction))
    user_ids = [str(u + 1) for u in range(num_users)]
    niche_users = set(rng.choice(num_users, size=num_niche_users, replace=False).tolist()) if num_niche_users else set()
    tastes = rng.normal(0.0, 1.0, size=(num_users, n_genres))
    generosity = rng.normal(0.0, user_bias_strength, size=num_users)
    start = 880_000_000
    span = 90 * 24 * 3600 * 12  # about three years of activity
    rows = []
    for u in range(num_users):
        count = max(12, int(rng.poisson(interactions_per_user)))
        is_niche = u in niche_users and num_niche_items > 0
        n_niche = int(round(count * niche_share)) if is_niche else 0
        regular = rng.choice(num_regular, size=min(count - n_niche, num_regular), replace=False, p=popularity)
        chosen = list(regular)
        if n_niche:
            chosen += list(num_regular + rng.choice(num_niche_items, size=min(n_niche, num_niche_items), replace=False))
        rng.shuffle(chosen)
        t0 = start + rng.integers(0, span // 2)
        times = np.sort(t0 + rng.integers(0, span // 2, size=len(chosen)))
        for item, ts in zip(chosen, times):
            if item < num_regular:
                g = genre_matrix[item]
                affinity = tastes[u] @ g / np.sqrt(g.sum())
                score = taste_strength * affinity + quality[item]
            else:
                score = 3.0 * quality[item]
            stars = np.clip(np.round(3.3 + generosity[u] + score + rng.normal(0.0, noise)), 1, 5)
            rows.append((user_ids[u], item_ids[item], float(stars), int(ts)))

    interactions = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": item_ids, "title": titles, "genres": genres})
    groups = {user_ids[u]: ("niche" if u in niche_users and num_niche_items else "regular") for u in range(num_users)}
    return RecData("synthetic", interactions, items, like_threshold=3.0, item_kind="movie", user_groups=groups)


def _unique_title(rng: np.random.Generator, words: list[str], used: set[str]) -> str:
    """A made-up name word no other title has (real titles are mostly told apart by such words), plus `words`."""
    while True:
        name = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))).capitalize()
        if name not in used:
            used.add(name)
            return f"{name} {' '.join(words)} ({int(rng.integers(1960, 2000))})"
