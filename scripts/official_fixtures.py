"""Regenerates the backbone fixtures the tests compare pyairir with, from the official code.

    pip install einops
    python scripts/official_fixtures.py --official DIR [--check]

DIR holds the official repositories as cloned (no install, nothing of them is copied here):
    DIR/Restormer  github.com/swz30/Restormer              (fixtures made at df766d5)
    DIR/PromptIR   github.com/va1shn9v/PromptIR            (106159a)
    DIR/NAFNet     github.com/megvii-research/NAFNet       (2b4af71)
    DIR/AdaIR      github.com/c-yn/AdaIR                   (ccb8b98)
    DIR/SIPL       github.com/Aitical/SIPL                 (bd8b7ad)
    DIR/CPLIR      github.com/Aitical/CPLIR                (801b4ff)

Writes tests/models/data/official_state_dicts.json (for every registered configuration, the
state_dict keys and shapes of the official class built with the same arguments, on the meta
device) and tests/models/data/official_outputs.safetensors (for each case of
tests/models/official_cases.py, its input and the official class's float64 output, weights from
tests/models/deterministic_weights.py). With --check nothing is written: the files are
regenerated in memory and compared with the committed ones (tensors within 1e-12 of their largest
value, as the tests compare), and the exit status says whether they match. In tests/paradigms/data
it makes SIPL's entries (the keys of PromptIR_ProxyFusion and AdaIR_ProxyFusion, and their outputs
at the shallowest configuration, with and without privileged features) and CPLIR's (the keys of
SparsePromptIR with decoder=True, as its test options build it, and its shallow output).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pyairir.models.registry import CONFIGS  # noqa: E402
from tests.models.deterministic_weights import fill_deterministic  # noqa: E402
from tests.models.official_cases import CASES, INPUT_SEED, NOT_OFFICIAL  # noqa: E402

DATA = ROOT / "tests" / "models" / "data"
PARADIGM_DATA = ROOT / "tests" / "paradigms" / "data"
SHALLOW = dict(num_blocks=[1, 1, 1, 1], num_refinement_blocks=1)  # SIPL's dictionaries fix dim at 48
PRIVILEGED_SEED = 2


def require(path: Path) -> Path:
    if not path.is_file():
        raise SystemExit(f"official_fixtures: {path} does not exist; --official must hold the cloned repositories")
    return path


def exec_official(name: str, path: Path, source: str | None = None, **names: object) -> types.ModuleType:
    """The official file at `path` (or its `source`, patched) run as a module `name` that already
    holds `names` (stand-ins for what the file reads but never defines)."""
    module = types.ModuleType(name)
    module.__file__ = str(path)
    module.__dict__.update(names)
    exec(compile(source or require(path).read_text(), str(path), "exec"), module.__dict__)  # noqa: S102
    return module


def shallow_image(seed: int) -> torch.Tensor:
    """The paradigms' 1x3x32x32 float64 input (seed INPUT_SEED) or privileged image."""
    return torch.rand((1, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def stand_in_registry() -> None:
    """SIPL's and CPLIR's files register their classes in basicsr's ARCH_REGISTRY: a no-op one."""
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = types.SimpleNamespace(register=lambda *args: (lambda cls: cls))
    sys.modules["basicsr.utils.registry"] = registry


def load_path(name: str, path: Path) -> types.ModuleType:
    require(path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def official_classes(official: Path) -> dict[str, type[torch.nn.Module]]:
    """pyairir class name -> the official class, each architecture file loaded by path."""
    # NAFNet's files import basicsr's package, which needs its whole training stack: give them the
    # two names they use instead.
    for package in ("basicsr", "basicsr.models", "basicsr.models.archs"):
        sys.modules.setdefault(package, types.ModuleType(package))
    utils = types.ModuleType("basicsr.utils")
    utils.get_root_logger = logging.getLogger
    sys.modules["basicsr.utils"] = utils
    archs = official / "NAFNet" / "basicsr" / "models" / "archs"
    load_path("basicsr.models.archs.arch_util", archs / "arch_util.py")
    load_path("basicsr.models.archs.local_arch", archs / "local_arch.py")
    nafnet = load_path("official_nafnet", archs / "NAFNet_arch.py")
    restormer = load_path("official_restormer", official / "Restormer" / "basicsr" / "models" / "archs" /
                          "restormer_arch.py")
    promptir = load_path("official_promptir", official / "PromptIR" / "net" / "model.py")
    adair = load_path("official_adair", official / "AdaIR" / "net" / "model.py")
    return {"Restormer": restormer.Restormer, "PromptIR": promptir.PromptIR, "NAFNet": nafnet.NAFNet,
            "NAFNetLocal": nafnet.NAFNetLocal, "AdaIR": adair.AdaIR}


def sipl_classes(official: Path) -> dict[str, type[torch.nn.Module]]:
    """backbone name -> SIPL's official class. Its module_util imports `uclsr` (NAFNet's LayerNorm2d)
    and `clip` (unused by these classes), and its files import basicsr's registry: stand-ins for those."""
    for package in ("basicsr.archs", "uclsr", "uclsr.archs", "clip"):
        sys.modules.setdefault(package, types.ModuleType(package))
    sys.modules["uclsr.archs.arch_util"] = sys.modules["basicsr.models.archs.arch_util"]
    sys.modules["basicsr.archs.arch_util"] = sys.modules["basicsr.models.archs.arch_util"]
    stand_in_registry()
    archs = official / "SIPL" / "basicsr" / "archs"
    load_path("basicsr.archs.module_util", archs / "module_util.py")
    found = {}
    for backbone, file, name in (("promptir", "PromptIR_CyclyePrivilege_arch.py", "PromptIR_ProxyFusion"),
                                 ("adair", "adair_arch.py", "AdaIR_ProxyFusion")):
        source = require(archs / file).read_text().replace("from .module_util", "from basicsr.archs.module_util")
        module = exec_official(f"official_sipl_{backbone}", archs / file, source)
        found[backbone] = getattr(module, name)
    return found


def cplir_class(official: Path) -> type[torch.nn.Module]:
    """CPLIR's SparsePromptIR. Its __init__ reads an undefined name `privilege_post` (a NameError as
    published): the module is given it as None."""
    stand_in_registry()
    path = official / "CPLIR" / "basicsr" / "archs" / "cplir_inference_arch.py"
    return exec_official("official_cplir", path, privilege_post=None).SparsePromptIR


def cplir_fixtures(cls: type[torch.nn.Module]) -> tuple[dict[str, list], dict[str, torch.Tensor]]:
    """CPLIR's manifest (cplir_promptir) and its shallow output on `input` (cplir)."""
    image = shallow_image(INPUT_SEED)
    with torch.device("meta"):
        keys = {"cplir_promptir": [[k, list(v.shape)] for k, v in cls(decoder=True).state_dict().items()]}
    model = fill_deterministic(cls(decoder=True, **SHALLOW).double()).eval()
    with torch.no_grad():
        output = model(image)
    print(f"cplir_promptir: {cls.__name__}")
    return keys, {"cplir": output}


def sipl_fixtures(classes: dict[str, type[torch.nn.Module]]) -> tuple[dict[str, list], dict[str, torch.Tensor]]:
    """SIPL's manifests (sipl_<backbone>) and shallow outputs (sipl[_adair]_guided / _unguided), on
    `input` and privileged features from `privileged_image` (the official return_feature)."""
    image, privileged = shallow_image(INPUT_SEED), shallow_image(PRIVILEGED_SEED)
    keys, tensors = {}, {"input": image, "privileged_image": privileged}
    for backbone, cls in classes.items():
        extra = {"decoder": True} if backbone == "promptir" else {}
        with torch.device("meta"):
            keys[f"sipl_{backbone}"] = [[k, list(v.shape)] for k, v in cls(**extra).state_dict().items()]
        model = fill_deterministic(cls(**SHALLOW, **extra).double()).eval()
        prefix = "sipl" if backbone == "promptir" else f"sipl_{backbone}"
        with torch.no_grad():
            features = model(privileged, return_feature=True)
            tensors[f"{prefix}_unguided"] = model(image, return_feature=False)
            tensors[f"{prefix}_guided"] = model(image, privileged_features=features, privileged_weights=[1, 1, 1],
                                                return_feature=False)
        print(f"sipl_{backbone}: {cls.__name__}")
    return keys, tensors


def write_manifest(path: Path, keys: dict[str, list]) -> None:
    path.write_text("{\n" + ",\n".join(f"  {json.dumps(name)}: {json.dumps(entries)}" for name, entries in keys.items())
                    + "\n}\n")


def manifests(classes: dict[str, type[torch.nn.Module]]) -> dict[str, list]:
    result = {}
    for name, (cls, arguments, _) in CONFIGS.items():
        if name in NOT_OFFICIAL:
            continue
        with torch.device("meta"):
            model = classes[cls.__name__](**arguments)
        result[name] = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    return result


def outputs(classes: dict[str, type[torch.nn.Module]]) -> dict[str, torch.Tensor]:
    result = {}
    for name, (class_name, arguments, shape) in CASES.items():
        model = fill_deterministic(classes[class_name](**arguments).double()).eval()
        image = torch.rand(shape, generator=torch.Generator().manual_seed(INPUT_SEED), dtype=torch.float64)
        with torch.no_grad():
            result[f"{name}.input"], result[f"{name}.output"] = image, model(image).contiguous()
        print(f"{name}: {class_name}{tuple(shape)}")
    return result


def close(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Equal within the tests' tolerance (1e-12 of the largest value): float64 sums may be ordered
    differently on another machine or thread count."""
    if a is None or b is None or a.shape != b.shape:
        return False
    return bool((a - b).abs().max() <= 1e-12 * b.abs().max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="folder holding the official repositories")
    parser.add_argument("--check", action="store_true", help="compare with the committed fixtures, write nothing")
    args = parser.parse_args()
    classes = official_classes(args.official)
    sipl_keys, sipl_tensors = sipl_fixtures(sipl_classes(args.official))
    cplir_keys, cplir_tensors = cplir_fixtures(cplir_class(args.official))
    folders = {DATA: (manifests(classes), outputs(classes)),
               PARADIGM_DATA: ({**sipl_keys, **cplir_keys}, {**sipl_tensors, **cplir_tensors})}
    problems = []
    for folder, (keys, tensors) in folders.items():
        committed_keys = json.loads((folder / "official_state_dicts.json").read_text())
        committed = load_file(folder / "official_outputs.safetensors")
        if args.check:
            problems += [f"{folder.parent.name} manifest {n}" for n in keys.keys() | committed_keys.keys()
                         if keys.get(n) != committed_keys.get(n)]
            problems += [f"{folder.parent.name} tensor {n}" for n in tensors.keys() | committed.keys()
                         if not close(tensors.get(n), committed.get(n))]
            continue
        write_manifest(folder / "official_state_dicts.json", keys)
        save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "official_outputs.safetensors")
        print(f"wrote {folder / 'official_state_dicts.json'} ({len(keys)} configurations) and "
              f"{folder / 'official_outputs.safetensors'} ({len(tensors)} tensors)")
    if args.check:
        print("fixtures match the official code" if not problems else "differ: " + ", ".join(sorted(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
