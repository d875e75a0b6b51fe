"""``models.from``: trained models taken from another study's store, checked before Ray.

A study that names ``models.from`` trains nothing: its train stage copies each
``<arch>-s<seed>`` model (of ``models.archs`` × ``models.seeds``) from that store. The
models must know this study's cities — the same names in the same class order — and see
its input size, or every later number would be computed against the wrong classes or
pixels; both are checked here, before anything runs, and a mismatch names both sides.
"""

from __future__ import annotations

from citylens.config.schema import ConfigError, StudyConfig

__all__ = ["check_models_from", "study_cities"]


def study_cities(cfg: StudyConfig) -> list[str]:
    """The study's cities in class order (sorted), synthetic ones included."""
    if cfg.cities:
        return sorted(cfg.cities)
    from citylens.data.scenes import NULL_STYLE, style_for

    names = [style_for(i).name for i in range(cfg.synthetic.cities)]
    return sorted(names + ([NULL_STYLE.name] if cfg.synthetic.null_city else []))


def check_models_from(cfg: StudyConfig) -> dict[str, dict]:
    """The models ``models.from`` provides, each checked against the study.

    Returns:
        model name -> ``{"arch", "seed", "key", "folder", "meta", "record"}`` (its
        folder in the source store, its ``meta.json`` and its training record there).

    Raises:
        ConfigError: naming ``models.from`` (no trained models there, one missing,
            other cities or another input size) or ``models.init_weights``.
    """
    from citylens.storage import Store
    from citylens.tables import model_name

    uri = cfg.models.source
    if uri is None:
        return {}
    if cfg.models.init_weights:
        raise ConfigError("models.init_weights: not used with models.from (its models are trained)")
    try:
        source = Store(uri, cfg.run.storage_options)
        rec = source.record("train")
    except Exception as err:
        raise ConfigError(f"models.from: cannot read {uri} ({type(err).__name__}: {err})") from None
    if rec is None:
        raise ConfigError(f"models.from: {uri} has no trained models (no stages/train.json)")
    have = rec.get("models", {})
    want = [model_name(a, s) for a in cfg.models.archs for s in cfg.models.seeds]
    missing = [n for n in want if n not in have]
    if missing:
        raise ConfigError(
            f"models.from: {uri} has {', '.join(sorted(have)) or 'no models'}, not "
            f"{', '.join(missing)}: set models.archs and models.seeds to models it has"
        )
    if rec.get("models_from"):
        raise ConfigError(
            f"models.from: {uri} took its models from {rec['models_from']}: name that "
            "store, whose splits trained them"
        )
    cities = study_cities(cfg)
    out = {}
    for name in want:
        try:
            model_rec = source.record(f"train/{name}") or {}
            folder = model_rec.get("folder", f"models/{name}")
            meta = source.read_json(f"{folder}/meta.json")
        except Exception as err:
            raise ConfigError(
                f"models.from: cannot read {uri}'s {name} ({type(err).__name__}: {err})"
            ) from None
        keys = {have[name]["key"], model_rec.get("key", have[name]["key"])}
        keys.add(meta.get("key", have[name]["key"]))
        if len(keys) > 1:
            raise ConfigError(
                f"models.from: {uri}'s {name} is not the model its train record names "
                "(the store is being retrained, or was changed by hand): run it to the end"
            )
        if list(meta.get("cities", [])) != cities:
            raise ConfigError(
                f"models.from: {uri}'s {name} knows the cities {meta.get('cities')} (in "
                f"class order); this study's are {cities}"
            )
        if int(meta["input_size"]) != cfg.train.input_size:
            raise ConfigError(
                f"models.from: {uri}'s {name} was trained at {meta['input_size']} px; this "
                f"study's train.input_size is {cfg.train.input_size}"
            )
        out[name] = {**have[name], "folder": folder, "meta": meta, "record": model_rec}
    return out
