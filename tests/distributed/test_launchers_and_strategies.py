"""Multi-GPU trainer configs and Hydra launchers: they compose with train.yaml, name real arguments, build
what this machine can build (FSDP and DDP strategies on CPU; DeepSpeed only where it is installed), and a
joblib multirun really runs two training jobs in parallel processes."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from pathlib import Path

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tests.compose import compose_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MULTI_GPU = ("fsdp", "deepspeed_stage_2", "deepspeed_stage_3", "deepspeed_stage_3_offload", "ddp_multinode")
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
# Keys of hydra-submitit-launcher 1.2's SlurmQueueConf (with BaseQueueConf): configs/hydra/launcher/slurm.yaml
# may set only these, or the plugin's schema would reject it once installed.
SLURM_QUEUE_KEYS = {
    "_target_",
    "submitit_folder",
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "stderr_to_stdout",
    "partition",
    "qos",
    "comment",
    "constraint",
    "exclude",
    "gres",
    "cpus_per_gpu",
    "gpus_per_task",
    "mem_per_gpu",
    "mem_per_cpu",
    "account",
    "signal_delay_s",
    "max_num_timeout",
    "additional_parameters",
    "array_parallelism",
    "setup",
}


def _compose(overrides: list[str], tmp_path: Path, hydra_config: bool = False):
    return compose_config(overrides, tmp_path, hydra_config=hydra_config)


def _strategy_class(target: str) -> type:
    module, _, name = target.rpartition(".")
    return getattr(importlib.import_module(module), name)


# --- trainer configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MULTI_GPU)
def test_multi_gpu_trainer_configs_compose_onto_the_shared_defaults(name, tmp_path):
    cfg = _compose([f"trainer={name}"], tmp_path)
    trainer = cfg.trainer
    assert trainer._target_ == "lightning.pytorch.Trainer"
    assert trainer.accelerator == "gpu" and trainer.precision == "bf16-mixed"
    assert isinstance(trainer.num_nodes, int) and trainer.num_nodes >= 1
    assert trainer.gradient_clip_val == 1.0 and trainer.log_every_n_steps == 1  # from trainer/default.yaml
    strategy = OmegaConf.to_container(trainer.strategy, resolve=True)
    target = strategy.pop("_target_")
    assert target.startswith("lightning.pytorch.strategies.")
    # Every key must be an argument of the strategy (DDP and FSDP pass the rest on to torch's wrapper).
    cls = _strategy_class(target)
    accepted = set(inspect.signature(cls.__init__).parameters)
    if target.endswith("DDPStrategy"):
        from torch.nn.parallel import DistributedDataParallel

        accepted |= set(inspect.signature(DistributedDataParallel.__init__).parameters)
    if target.endswith("FSDPStrategy"):
        from torch.distributed.fsdp import FullyShardedDataParallel

        accepted |= set(inspect.signature(FullyShardedDataParallel.__init__).parameters)
    assert set(strategy) <= accepted, f"{name}: unknown strategy arguments {set(strategy) - accepted}"


@pytest.mark.parametrize(
    ("name", "stage", "offload"),
    [
        ("deepspeed_stage_2", 2, False),
        ("deepspeed_stage_3", 3, False),
        ("deepspeed_stage_3_offload", 3, True),
    ],
)
def test_deepspeed_configs(name, stage, offload, tmp_path):
    cfg = _compose([f"trainer={name}", "data.batch_size=6"], tmp_path)
    strategy = cfg.trainer.strategy
    assert strategy._target_ == "lightning.pytorch.strategies.DeepSpeedStrategy"
    assert strategy.stage == stage
    assert strategy.offload_optimizer == offload and strategy.offload_parameters == offload
    assert strategy.logging_batch_size_per_gpu == 6  # follows data.batch_size
    if offload:
        assert strategy.offload_optimizer_device == "cpu" and strategy.offload_params_device == "cpu"
    if not HAS_DEEPSPEED:
        pytest.skip("deepspeed is not installed: composed values checked, DeepSpeedStrategy not instantiated")
    from lightning.pytorch.strategies import DeepSpeedStrategy

    built = instantiate(strategy)
    assert isinstance(built, DeepSpeedStrategy)
    assert built.config["zero_optimization"]["stage"] == stage


def test_fsdp_strategy_builds_and_wraps_the_llava_blocks(tmp_path, tiny_llava):
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    cfg = _compose(["trainer=fsdp"], tmp_path)
    strategy = instantiate(cfg.trainer.strategy)
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy == ShardingStrategy.FULL_SHARD
    assert strategy.kwargs["use_orig_params"] is True  # frozen and trainable parameters share FSDP units
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy)
    classes = set(policy._module_classes)
    assert {c.__name__ for c in classes} == {"LlamaDecoderLayer", "CLIPEncoderLayer"}
    # The classes are the ones a LLaVA loaded by mirage is made of (the tiny one has the same architecture).
    model, _ = tiny_llava
    found = {type(m) for m in model.modules()} & classes
    assert found == classes
    # Lightning runs FSDP on CUDA only; on this machine the Trainer refuses, with a clear message.
    with pytest.raises(InstantiationException, match="requires a GPU accelerator"):
        _instantiate_trainer(
            _compose(["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=1"], tmp_path)
        )


def _instantiate_trainer(cfg):
    return instantiate(cfg.trainer, logger=False, enable_checkpointing=False, enable_progress_bar=False)


def test_ddp_multinode_trainer_builds_on_cpu(tmp_path):
    from lightning.pytorch.strategies import DDPStrategy

    cfg = _compose(
        [
            "trainer=ddp_multinode",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.strategy.process_group_backend=gloo",
        ],
        tmp_path,
    )
    assert cfg.trainer.num_nodes == 2
    trainer = _instantiate_trainer(cfg)
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.num_nodes == 2 and trainer.num_devices == 2 and trainer.world_size == 4
    assert trainer.strategy._ddp_kwargs == {
        "find_unused_parameters": False,
        "gradient_as_bucket_view": True,
        "static_graph": False,
    }


@pytest.mark.parametrize("name", ["ddp", "ddp_cpu"])
def test_existing_ddp_configs_still_compose(name, tmp_path):
    cfg = _compose([f"trainer={name}"], tmp_path)
    assert cfg.trainer.strategy in ("ddp", "ddp_spawn")
    if name == "ddp_cpu":
        trainer = _instantiate_trainer(cfg)
        assert trainer.world_size == 2 and type(trainer.strategy).__name__ == "DDPStrategy"


# --- launchers -----------------------------------------------------------------------------------------


# Our joblib.yaml shares the plugin schema's name, so Hydra validates it against that schema and says so.
@pytest.mark.filterwarnings("ignore:(?s).*validated against ConfigStore schema with the same name")
def test_joblib_launcher_config(tmp_path):
    cfg = _compose(["hydra/launcher=joblib"], tmp_path, hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    assert launcher.n_jobs == 2
    built = instantiate(launcher)
    assert type(built).__name__ == "JoblibLauncher" and built.joblib["n_jobs"] == 2


def test_slurm_launcher_config_composes_without_the_plugin(tmp_path):
    cfg = _compose(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"], tmp_path, hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert set(launcher) <= SLURM_QUEUE_KEYS, set(launcher) - SLURM_QUEUE_KEYS
    for key in ("partition", "gpus_per_node", "tasks_per_node", "nodes", "timeout_min", "cpus_per_task"):
        assert key in launcher, key
    assert launcher.partition == "gpu" and launcher.array_parallelism >= 1 and launcher.mem_gb > 0
    if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None:
        return  # launching needs `pip install hydra-submitit-launcher`; composing does not
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    merged = OmegaConf.merge(OmegaConf.structured(SlurmQueueConf), launcher)  # the plugin's own schema
    assert merged.partition == "gpu"


@pytest.mark.slow
def test_joblib_multirun_runs_two_jobs_in_parallel_processes(tmp_path, cache_dir):
    from tests.cli import cli_command, run_cli

    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "experiment=sft_tiny",
        "trainer.max_steps=2",
        "seed=1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli(cli_command("mirage.train", args, cache_dir, "callbacks.rich_progress_bar=null"))
    output = result.stdout + result.stderr
    assert "Joblib.Parallel(n_jobs=2" in output, output[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"], output[-3000:]
    seeds = set()
    for job in jobs:
        assert not (job / "error.txt").exists(), (job / "error.txt").read_text()
        assert (job / "hf" / "mirage_export.json").is_file()
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        seeds |= {o for o in overrides if o.startswith("seed=")}
    assert seeds == {"seed=1", "seed=2"}
