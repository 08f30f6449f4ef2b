"""The demo, bench and Space settings name their recipes with the configs' own fields, and nothing else copies them."""

from dataclasses import fields, replace

import pytest
from forgetting_demo import SIZES, SpaceSize

from hf_recunlearn.bench import TINY, BenchSettings
from hf_recunlearn.demo import QUICK, DemoSettings
from hf_recunlearn.trainer import APAConfig, E2URecConfig, RecConfig, SISAConfig, UnlearningConfig

CONFIG_FIELDS = {f.name for cls in (RecConfig, UnlearningConfig, E2URecConfig, APAConfig) for f in fields(cls)}
SETTINGS = {"DemoSettings()": DemoSettings(), "QUICK": QUICK, "BenchSettings()": BenchSettings(), "TINY": TINY}
SETTINGS |= {f"SIZES[{name!r}]": size for name, size in SIZES.items()}


@pytest.mark.parametrize("cls", [DemoSettings, BenchSettings, SpaceSize])
def test_settings_fields_are_not_copies_of_config_fields(cls):
    # `seed` stays a settings field: it seeds the synthetic population and the split as well as every config.
    allowed = {"seed"} if issubclass(cls, DemoSettings) else set()
    assert {f.name for f in fields(cls)} & CONFIG_FIELDS == allowed


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_recipe_names_only_fields_of_its_config(name):
    settings = SETTINGS[name]
    recipes = [f for f in fields(settings) if isinstance(getattr(settings, f.name), dict)]
    assert recipes and all("config" in f.metadata for f in recipes)  # every dict is a checked recipe
    for f in recipes:
        known = {c.name for c in fields(f.metadata["config"])}
        assert set(getattr(settings, f.name)) <= known - {"output_dir"}, (name, f.name)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: DemoSettings(e2urec={"augment_learning_rte": 1e-4}),
         "'augment_learning_rte'.*E2URecConfig.*'augment_learning_rate'"),
        (lambda: DemoSettings(apa={"num_shard": 2}), "`DemoSettings.apa` sets 'num_shard'.*APAConfig.*'num_shards'"),
        (lambda: BenchSettings(unlearning={"audit_step": 5}),
         "`BenchSettings.unlearning` sets 'audit_step'.*'audit_steps'"),
        (lambda: replace(SIZES["tiny"], apa={"lora_rr": 4}), "`SpaceSize.apa` sets 'lora_rr'.*APAConfig"),
        (lambda: DemoSettings(original={"seed": 1}), r"`DemoSettings.original` sets 'seed'.*DemoSettings\(seed=...\)"),
        (lambda: DemoSettings(recommender={"output_dir": "elsewhere"}), "sets 'output_dir'"),
    ],
)  # fmt: skip
def test_a_misnamed_override_fails_when_the_settings_are_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_overrides_merge_over_the_defaults_and_reach_the_configs(tmp_path):
    settings = DemoSettings(seed=3, original={"num_train_epochs": 1}, apa={"num_shards": 2})
    assert settings.original == DemoSettings().original | {"num_train_epochs": 1}
    original = settings.original_config(tmp_path / "original")
    assert (original.num_train_epochs, original.use_lora, original.learning_rate, original.seed) == (1, False, 1e-3, 3)
    assert settings.original_config(tmp_path / "retrain", seed=4).seed == 4
    sisa = settings.apa_config(tmp_path / "sisa", SISAConfig, partition_method="user")
    assert (type(sisa), sisa.num_shards, sisa.partition_method, sisa.lora_r, sisa.learning_rate) == (
        SISAConfig, 2, "user", 8, 2e-3,
    )  # fmt: skip
    assert replace(settings, seed=5).apa == settings.apa  # replace() keeps the merged recipes as they are
    # The bench's approximate rows: the baselines train for E2URec's epochs and share the audit settings.
    bench = BenchSettings(e2urec={"num_train_epochs": 3.0}, unlearning={"audit_steps": 7})
    neggrad = bench.unlearning_config("neggrad", tmp_path / "neggrad")
    e2urec = bench.unlearning_config("e2urec", tmp_path / "e2urec", beta=0.0)
    assert (neggrad.num_train_epochs, neggrad.audit_steps) == (e2urec.num_train_epochs, e2urec.audit_steps) == (3.0, 7)
    assert (e2urec.beta, e2urec.augment_learning_rate, e2urec.eval_on_forget) == (0.0, 2e-4, False)
