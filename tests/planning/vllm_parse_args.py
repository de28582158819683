"""Parse rendered ``vllm serve`` argument lists with vLLM's OWN parser and DP resolution.

Run with the python of the vLLM virtualenv (``bash tools/vllm-venv.sh``), never the project's: it imports
the real ``vllm`` package. Used by ``test_vllm_argparse.py``.

stdin:  ``{"cases": [CASE, ...]}`` where CASE is
        ``{"id": str, "kind": "serve", "argv": [model, *args], "env": {name: value}}`` (argv without the
        leading ``vllm serve``), or
        ``{"id": str, "kind": "external_launcher", "parallel": {ParallelConfig kwargs}, "env": {...}}``.
stdout: ``{"vllm_version": str, "results": {id: RESULT}}`` (JSON, nothing else: vLLM's logs go to stderr).

What runs, per ``serve`` case, is what ``vllm serve`` runs before it starts engines:

1. the ``vllm`` CLI parser with the ``serve`` subcommand (``vllm/entrypoints/cli/main.py`` +
   ``ServeSubcommand.subparser_init`` → ``make_arg_parser`` on a ``FlexibleArgumentParser``), then
   ``ServeSubcommand.validate``; ``args.model = args.model_tag`` as ``ServeSubcommand.cmd`` does;
2. ``AsyncEngineArgs.from_cli_args``, with ``_api_process_count`` set as ``run_multi_api_server`` sets it;
3. ``EngineArgs.create_engine_config(headless=...)`` — vLLM's own DP resolution (v0.11.1 arg_utils
   L1456-L1585). Without a GPU and without network access, the model-dependent steps before it are
   stubbed (speculator detection, ``create_model_config`` (downloads the HF config), feature checks,
   default args, ``CacheConfig``), and the ``ParallelConfig(...)`` call is intercepted: its keyword
   arguments are the resolved DP fields, reported as ``resolved``;
4. the real ``ParallelConfig(**resolved)`` (``__post_init__``, validators, ``compute_hash``), reported as
   ``config``. The machine has no CUDA platform, so vLLM runs on its CPU platform and EPLB's "CUDA or
   ROCm only" check is answered as on a CUDA machine; nothing else is faked;
5. the checks ``run_headless`` / ``run_multi_api_server`` make before launching (``launch_errors``).

``external_launcher`` cases build the real ``ParallelConfig`` with the torchrun env (RANK, ...) set, so
vLLM itself computes the DP rank of that process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import traceback
from types import SimpleNamespace
from typing import Any

PARALLEL_FIELDS = (
    "pipeline_parallel_size",
    "tensor_parallel_size",
    "decode_context_parallel_size",
    "data_parallel_size",
    "data_parallel_rank",
    "data_parallel_start_rank",
    "data_parallel_size_local",
    "data_parallel_address",
    "data_parallel_rpc_port",
    "data_parallel_backend",
    "data_parallel_hybrid_lb",
    "data_parallel_external_lb",
    "enable_expert_parallel",
    "all2all_backend",
    "enable_eplb",
    "eplb_config",
    "expert_placement_strategy",
    "enable_dbo",
    "dbo_decode_token_threshold",
    "dbo_prefill_token_threshold",
    "distributed_executor_backend",
    "disable_custom_all_reduce",
    "nnodes",
    "node_rank",
)
RESOLVED_FIELDS = (
    "pipeline_parallel_size",
    "tensor_parallel_size",
    "decode_context_parallel_size",
    "data_parallel_size",
    "data_parallel_rank",
    "data_parallel_size_local",
    "data_parallel_master_ip",
    "data_parallel_rpc_port",
    "data_parallel_backend",
    "data_parallel_external_lb",
    "data_parallel_hybrid_lb",
    "enable_expert_parallel",
    "all2all_backend",
    "enable_eplb",
    "eplb_config",
    "expert_placement_strategy",
    "enable_dbo",
    "dbo_decode_token_threshold",
    "dbo_prefill_token_threshold",
    "distributed_executor_backend",
    "disable_custom_all_reduce",
)
CONFIG_FIELDS = (
    "world_size",
    "world_size_across_dp",
    "data_parallel_size",
    "data_parallel_rank",
    "data_parallel_size_local",
    "data_parallel_master_ip",
    "data_parallel_rpc_port",
    "data_parallel_external_lb",
    "data_parallel_hybrid_lb",
    "all2all_backend",
    "enable_eplb",
    "eplb_config",
    "distributed_executor_backend",
)
NAMESPACE_FIELDS = ("model_tag", "model", "headless", "api_server_count", "port", *PARALLEL_FIELDS)


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def pick(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    get = obj.get if isinstance(obj, dict) else lambda k, d=None: getattr(obj, k, d)
    return {f: jsonable(get(f, None)) for f in fields}


class _CapturedParallelConfig(Exception):  # noqa: N818 (control flow, not an error)
    """Raised by the intercepted ParallelConfig(...) call inside create_engine_config."""


class _CudaAlike:
    """vLLM's CPU platform, except that it answers is_cuda_alike() (EPLB's platform check) with True."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def is_cuda_alike(self) -> bool:
        return True


def _error(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


@contextlib.contextmanager
def _env(values: dict[str, str]):  # type: ignore[no-untyped-def]
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> int:
    request = json.load(sys.stdin)
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # vLLM logs to stdout; the only thing on stdout is our JSON

    from vllm import platforms
    from vllm.platforms.cpu import CpuPlatform

    # What `vllm bench` does on a machine without an accelerator; set before anything reads it.
    platforms.current_platform = CpuPlatform()

    import vllm
    import vllm.config.parallel as parallel_mod
    import vllm.entrypoints.cli.serve as serve_mod
    from vllm.config import ParallelConfig
    from vllm.engine import arg_utils
    from vllm.entrypoints.utils import cli_env_setup
    from vllm.usage.usage_lib import UsageContext
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_env_setup()
    parser = FlexibleArgumentParser(description="vLLM CLI")
    subparsers = parser.add_subparsers(required=False, dest="subparser")
    serve = serve_mod.ServeSubcommand()
    serve.subparser_init(subparsers).set_defaults(dispatch_function=serve.cmd)

    captured: dict[str, Any] = {}

    class CaptureParallelConfig:
        """Stands in for the ParallelConfig class in arg_utils: records the call, keeps its defaults."""

        def __getattr__(self, name: str) -> Any:  # ParallelConfig.data_parallel_rpc_port, ...
            return getattr(ParallelConfig, name)

        def __call__(self, **kwargs: Any) -> Any:
            captured.clear()
            captured.update(kwargs)
            raise _CapturedParallelConfig

    def model_config_stub(self: Any) -> Any:
        return SimpleNamespace(
            model=self.model,
            tokenizer=self.tokenizer,
            hf_text_config=None,
            is_attention_free=False,
            skip_tokenizer_init=True,
            get_sliding_window=lambda: None,
        )

    def default_args_stub(self: Any, usage_context: Any, model_config: Any) -> None:
        if self.enable_chunked_prefill is None:
            self.enable_chunked_prefill = True

    arg_utils.ParallelConfig = CaptureParallelConfig()

    def no_speculators(model: Any, tokenizer: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        return model, tokenizer, kwargs.get("vllm_speculative_config")

    arg_utils.maybe_override_with_speculators = no_speculators
    arg_utils.is_interleaved = lambda config: True
    arg_utils.CacheConfig = lambda **kwargs: None
    arg_utils.EngineArgs.create_model_config = model_config_stub
    arg_utils.EngineArgs._check_feature_supported = lambda self, model_config: None
    arg_utils.EngineArgs._set_default_args = default_args_stub
    parallel_mod.current_platform = _CudaAlike(platforms.current_platform)

    def build_config(kwargs: dict[str, Any], out: dict[str, Any]) -> Any:
        try:
            pc = ParallelConfig(**kwargs)
        except Exception as exc:
            out["config_error"] = _error(exc)
            return None
        out["config"] = pick(pc, CONFIG_FIELDS)
        out["config"]["compute_hash"] = pc.compute_hash()
        return pc

    results: dict[str, Any] = {}
    for case in request["cases"]:
        out: dict[str, Any] = {"error": None, "launch_errors": []}
        results[case["id"]] = out
        with _env(case.get("env") or {}):
            if case["kind"] == "external_launcher":
                build_config({**case["parallel"], "distributed_executor_backend": "external_launcher"}, out)
                continue
            stderr = io.StringIO()
            try:
                with contextlib.redirect_stderr(stderr):
                    ns = parser.parse_args(["serve", *case["argv"]])
                serve.validate(ns)
            except SystemExit:
                out["error"] = "argparse: " + stderr.getvalue().strip()
                continue
            except Exception as exc:
                out["error"] = _error(exc)
                continue
            if ns.model_tag is not None:  # ServeSubcommand.cmd
                ns.model = ns.model_tag
            mode = "headless" if (ns.headless or ns.api_server_count < 1) else "api_server"
            out["namespace"] = pick(ns, NAMESPACE_FIELDS)
            try:
                engine_args = vllm.AsyncEngineArgs.from_cli_args(ns)
            except Exception as exc:
                out["error"] = _error(exc)
                continue
            if mode == "api_server" and ns.api_server_count > 1:  # run_multi_api_server
                engine_args._api_process_count = ns.api_server_count
                engine_args._api_process_rank = -1
            out["engine_args"] = pick(engine_args, PARALLEL_FIELDS)
            captured.clear()
            try:
                engine_args.create_engine_config(
                    usage_context=UsageContext.OPENAI_API_SERVER, headless=mode == "headless"
                )
                out["error"] = "create_engine_config returned without building a ParallelConfig"
                continue
            except _CapturedParallelConfig:
                pass
            except Exception as exc:
                out["error"] = "create_engine_config: " + _error(exc)
                continue
            out["resolved"] = pick(captured, RESOLVED_FIELDS)
            pc = build_config(dict(captured), out)
            if pc is None:
                continue
            # The checks vllm serve makes before it launches anything (entrypoints/cli/serve.py).
            if mode == "headless":
                if ns.api_server_count > 1:
                    out["launch_errors"].append("api_server_count can't be set in headless mode")
                if engine_args.data_parallel_hybrid_lb:
                    out["launch_errors"].append("data_parallel_hybrid_lb is not applicable in headless mode")
                if pc.data_parallel_size_local <= 0:
                    out["launch_errors"].append("data_parallel_size_local must be > 0 in headless mode")
            elif ns.api_server_count > 1 and not (
                pc.data_parallel_external_lb or pc.data_parallel_hybrid_lb or pc.data_parallel_rank == 0
            ):
                out["launch_errors"].append("run_multi_api_server: internal LB API servers only on rank 0")
            out["mode"] = mode

    json.dump({"vllm_version": vllm.__version__, "results": results}, real_stdout)
    real_stdout.write("\n")
    real_stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
