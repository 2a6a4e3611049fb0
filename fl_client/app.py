"""Flower ClientApp (Message API, flwr 1.41): the hospital's adapter.

Unpacks the server's message (round config, encrypted global model), calls the plain functions of
:mod:`fl_client.federated`, packs the encrypted update. What the site is, where its local state and
key live and where its data comes from are *node* facts:

* deployment (``flower-supernode --node-config``): ``site-id``, ``site-dir`` (site-local state: privacy
  ledger, audit log, predictions), ``site-keys`` (the folder holding ``secret.ctx``), ``site-input``;
* simulation (one node per site): ``partition-id`` indexes the run config's ``sites`` list, and the
  paths are ``site-root/<SITE>``, ``site-keys`` and ``site-input-root/<SITE>``.

The model, data and local training come from a *task* (``task = "module:function"`` in the run
config): ``task(site, site_input, settings) -> SiteTask``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from fl_client.federated import ClientSettings, SiteKeys, SiteTask, apply_global_model, site_round
from privacy.ckks import KeyInfo, load_site_context
from privacy.update import GlobalModel

log = logging.getLogger(__name__)


TaskFactory = Callable[[str, "Path | None", ClientSettings], SiteTask]


@dataclass(frozen=True)
class NodeSpec:
    """Where one node's site facts live."""

    site: str
    site_dir: Path
    site_keys: Path | None
    site_input: Path | None


def settings_from_run_config(config: Mapping[str, Any]) -> ClientSettings:
    """:class:`ClientSettings` from the kebab-case run config."""
    return ClientSettings(mode=str(config.get("mode", "dp-he")), local_epochs=int(config.get("local-epochs", 2)),
                          batch_size=int(config.get("batch-size", 16)),
                          noise_multiplier=float(config.get("noise-multiplier", 1.0)),
                          max_grad_norm=float(config.get("max-grad-norm", 1.0)), delta=float(config.get("delta", 1e-5)),
                          epsilon_budget=float(config.get("epsilon-budget", 8.0)),
                          accountant=str(config.get("accountant", "prv")), seed=int(config.get("seed", 7)),
                          secure_noise=_flag(config.get("secure-noise", True), "secure-noise"),
                          cutoff_source=str(config.get("cutoff-source", "protocol")),
                          heldout_share=float(config.get("heldout-share", 0.25)))


def _flag(value: Any, name: str) -> bool:
    """A boolean run-config value (TOML/YAML give a bool; a string reads true/false)."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false, but was {value!r}.")
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _optional_path(value: Any) -> Path | None:
    return Path(str(value)) if value not in (None, "") else None


def node_spec(node_config: Mapping[str, Any], run_config: Mapping[str, Any]) -> NodeSpec:
    """Resolve this node's site facts (deployment node config first, else the simulation partition)."""
    if "site-id" in node_config:
        site = str(node_config["site-id"])
        return NodeSpec(site, Path(str(node_config.get("site-dir", f"site_state/{site}"))),
                        _optional_path(node_config.get("site-keys")), _optional_path(node_config.get("site-input")))
    sites = [s for s in str(run_config.get("sites", "")).split(",") if s]
    index = int(node_config.get("partition-id", -1))
    if not 0 <= index < len(sites):
        raise ValueError(f"node has partition-id {index} but the run config lists sites {sites}; give each node a "
                         "site-id in --node-config or list one site per simulated node in 'sites'.")
    site = sites[index]
    inputs = dict(pair.split("=", 1) for pair in str(run_config.get("site-inputs", "")).split(",") if "=" in pair)
    input_root = _optional_path(run_config.get("site-input-root"))
    site_input = Path(inputs[site]) if site in inputs else (input_root / site if input_root else None)
    return NodeSpec(site, Path(str(run_config.get("site-root", "site_state"))) / site,
                    _optional_path(run_config.get("site-keys")), site_input)


def load_task(spec: str) -> TaskFactory:
    """Import ``"module:function"``."""
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise ValueError(f"task must be 'module:function', but was {spec!r}.")
    factory: TaskFactory = getattr(importlib.import_module(module_name), func_name)
    return factory


def load_site_keys(spec: NodeSpec, settings: ClientSettings) -> SiteKeys | None:
    """The site's key material (secret context only in the CKKS modes)."""
    if spec.site_keys is None:
        if settings.encoding == "ckks":
            raise FileNotFoundError(f"site {spec.site}: mode {settings.mode!r} needs site-keys (KEYDIR/site).")
        return None
    info = KeyInfo.read(spec.site_keys / "keyinfo.json")
    context = load_site_context(spec.site_keys / "secret.ctx") if settings.encoding == "ckks" else None
    return SiteKeys(info, context)


def _global(msg: Message) -> GlobalModel | None:
    return GlobalModel.from_record(dict(msg.content["global"])) if "global" in msg.content else None


def handle_train(msg: Message, spec: NodeSpec, settings: ClientSettings, task_spec: str) -> Message:
    """One federated round at this node's site."""
    round_ = int(str(msg.content["config"]["round"]))
    task = load_task(task_spec)(spec.site, spec.site_input, settings)
    update = site_round(round_, task.model_fn, task.data, _global(msg), settings, load_site_keys(spec, settings),
                        spec.site_dir, task.train_fn)
    log.info("site %s round %d: sent %d bytes (%s)", spec.site, round_, update.nbytes, update.meta.encoding)
    return Message(RecordDict({"update": ConfigRecord(update.to_record())}), reply_to=msg)


def handle_query(msg: Message, spec: NodeSpec, settings: ClientSettings, task_spec: str) -> Message:
    """Handshake: key ceremony, model layout, that the task loads and (DP modes) the privacy accounting inputs."""
    from fl_client.federated import accounting_inputs, model_vector

    task = load_task(task_spec)(spec.site, spec.site_input, settings)
    keys = load_site_keys(spec, settings)
    layout, _ = model_vector(task.model_fn())
    hello: dict[str, Any] = {"site": spec.site, "key_id": keys.info.key_id if keys else "none",
                             "layout_digest": layout.digest, "length": layout.size}
    records: dict[str, Any] = {"hello": ConfigRecord(hello)}
    if settings.dp:  # the server plans the run's rounds within every site's budget before any is spent
        inputs = accounting_inputs(settings, spec.site_dir, spec.site, task.data.n_examples)
        records["accounting"] = ConfigRecord(dict(inputs.to_record()))
    return Message(RecordDict(records), reply_to=msg)


def handle_evaluate(msg: Message, spec: NodeSpec, settings: ClientSettings, task_spec: str) -> Message:
    """The final evaluation, in two phases (config ``phase``; docs/federation.md "Pooled evaluation").

    ``score`` (default): load the final global model, score the site's patients (rows stay at the site),
    reply with site-level scalars and the *encrypted* training-patient score histograms. ``pool``: decrypt
    the server's sum of those histograms, fix the cut-offs, reply with them and the *encrypted* aggregate
    of the held-out test patients. Nothing patient-level leaves the site, and in the CKKS modes no plaintext count.
    """
    from fl_client.pooled_evaluation import pool_phase, score_phase

    task = load_task(task_spec)(spec.site, spec.site_input, settings)
    config = msg.content["config"] if "config" in msg.content else ConfigRecord({})
    phase = str(config.get("phase", "score"))
    round_ = int(str(config.get("round", 0)))
    keys = load_site_keys(spec, settings)
    records: dict[str, Any] = {}
    if phase == "pool":
        summed = GlobalModel.from_record(dict(msg.content["histograms"])) if "histograms" in msg.content else None
        cutoffs, update = pool_phase(task, summed, round_, settings, keys, spec.site_dir)
        records["cutoffs"] = ConfigRecord(dict(cutoffs))
        records["aggregate"] = ConfigRecord(update.to_record())
        metrics: dict[str, float] = {}
    elif phase == "score":
        global_model = _global(msg)
        metrics = {"n": float(task.data.n_examples)}
        if global_model is not None:
            model = task.model_fn()
            apply_global_model(model, global_model, keys)
            scalars, histograms = score_phase(task, model, round_, settings, keys, spec.site_dir)
            metrics.update(scalars)
            if histograms is not None:
                records["aggregate"] = ConfigRecord(histograms.to_record())
    else:
        raise ValueError(f"evaluate phase must be 'score' or 'pool', but was {phase!r}.")
    records["metrics"] = ConfigRecord({"site": spec.site, **metrics})
    return Message(RecordDict(records), reply_to=msg)


def make_client_app(resolve: Callable[[Context], tuple[NodeSpec, ClientSettings, str]] | None = None,
                    mods: list[Mod] | None = None) -> ClientApp:
    """A ClientApp; ``resolve(context) -> (node spec, settings, task)`` defaults to reading the Flower context.

    ``mods``: Flower client mods wrapped around every handler (the tests inject faults on the wire with them).
    """

    def default(context: Context) -> tuple[NodeSpec, ClientSettings, str]:
        run_config = dict(context.run_config)
        return (node_spec(dict(context.node_config), run_config), settings_from_run_config(run_config),
                str(run_config.get("task", "fl_client.federated:fusion_task")))

    resolver = resolve or default
    client = ClientApp(mods=mods)

    @client.train()
    def _train(msg: Message, context: Context) -> Message:
        return handle_train(msg, *resolver(context))

    @client.query()
    def _query(msg: Message, context: Context) -> Message:
        return handle_query(msg, *resolver(context))

    @client.evaluate()
    def _evaluate(msg: Message, context: Context) -> Message:
        return handle_evaluate(msg, *resolver(context))

    return client


app = make_client_app()

