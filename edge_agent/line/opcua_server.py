"""An OPC UA server (asyncua) shaped after OPC 40100 Machine Vision where it fits: a ``VisionSystem``
object with a ``Results`` folder holding the last result's variables, a ``Status`` folder, a ``Trigger``
method taking a part id, and a ``ResultReadyEventType`` event fired by ``VisionSystem`` for every result.
With ``[feedback]`` enabled, a ``Feedback(ResultId, Truth)`` method confirms or overrides a verdict
(stored off the server's loop; refusals are status codes: :data:`FEEDBACK_STATUS`).

Security: only Sign&Encrypt endpoints with the configured policy (Basic256Sha256 by default), users
from a file or client certificates; anonymous and unencrypted endpoints exist only when the config
allows them, which it does on loopback only. Tag list: docs/line.md."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node

from edge_agent.feedback.rules import FeedbackError, FeedbackRequest, check_id, check_truth_text
from edge_agent.line.aioloop import LoopThread
from edge_agent.line.opcua_certs import ensure_certificate
from edge_agent.line.opcua_users import LineUserManager, read_certificates, read_users
from edge_agent.line.result import STATE_CODES, VERDICT_CODES, Record
from edge_agent.line.tcp_line import Submit
from firmware_configs.line_section import OpcuaSection

log = logging.getLogger(__name__)

V = ua.VariantType
#: the last result's variables under VisionSystem/Results: browse name -> (type, record key or getter)
RESULT_VARS: tuple[tuple[str, ua.VariantType], ...] = (
    ("ResultId", V.String),
    ("PartId", V.String),
    ("ResultState", V.String),
    ("ResultStateCode", V.Int32),
    ("Verdict", V.String),
    ("VerdictCode", V.Int32),
    ("Class", V.String),
    ("ClassIndex", V.Int32),
    ("Confidence", V.Double),
    ("Uncertain", V.Boolean),
    ("DefectRegion", V.String),
    ("ProcessingTimes", V.String),
    ("InspectTimeMs", V.Double),
    ("TotalTimeMs", V.Double),
    ("ModelName", V.String),
    ("ModelVersion", V.Int32),
    ("TriggerId", V.UInt32),
    ("ResultCounter", V.UInt32),
)
EVENT_FIELDS: tuple[tuple[str, ua.VariantType], ...] = (
    ("ResultId", V.String),
    ("PartId", V.String),
    ("ResultState", V.String),
    ("Verdict", V.String),
    ("Class", V.String),
    ("Confidence", V.Double),
)
#: a refused feedback's reason -> the status code of the method call
FEEDBACK_STATUS: dict[str, int] = {
    "unknown_result": ua.StatusCodes.BadNotFound,
    "no_verdict": ua.StatusCodes.BadInvalidState,
    "store": ua.StatusCodes.BadInternalError,
}
_POLICIES = {
    "Basic256Sha256": ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
    "Aes128Sha256RsaOaep": ua.SecurityPolicyType.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Aes256Sha256RsaPss": ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
}


def result_values(rec: Record) -> dict[str, Any]:
    times = rec.get("times") or {}
    conf = rec.get("confidence")
    state = str(rec.get("state") or "ok")
    return {
        "ResultId": str(rec.get("result_id") or ""),
        "PartId": str(rec.get("part_id") or ""),
        "ResultState": state,
        "ResultStateCode": STATE_CODES.get(state, 0),
        "Verdict": str(rec.get("verdict") or ""),
        "VerdictCode": VERDICT_CODES.get(rec.get("verdict"), 0),
        "Class": str(rec.get("label") or ""),
        "ClassIndex": int(rec.get("class_index", -1) if rec.get("class_index") is not None else -1),
        "Confidence": float(conf) if conf is not None else 0.0,
        "Uncertain": bool(rec.get("uncertain")),
        "DefectRegion": json.dumps(rec.get("region")) if rec.get("region") else "",
        "ProcessingTimes": json.dumps(times),
        "InspectTimeMs": float(times.get("inspect_ms") or rec.get("latency_ms") or 0.0),
        "TotalTimeMs": float(times.get("total_ms") or 0.0),
        "ModelName": str(rec.get("model") or ""),
        "ModelVersion": int(rec.get("model_version") or 0),
        "TriggerId": int(rec.get("trigger_id") or 0),
        "ResultCounter": int(rec.get("result_seq") or 0),
    }


class OpcuaLineServer:
    """Also the sink of the OPC UA results (``name``, ``write``, ``close``)."""

    name = "line-opcua"

    def __init__(self, section: OpcuaSection, submit: Submit, status: Callable[[], str], agent: Any) -> None:
        self.section = section
        self._submit = submit
        self._status = status
        self.device_id = str(agent.device_id)
        self.application_uri = f"urn:edgeline:{self.device_id}:vision"
        self.url = f"opc.tcp://{section.host}:{section.port}/edgeline/"
        self._loop = LoopThread("line-opcua")
        self._server: Server | None = None
        self._vars: dict[str, Node] = {}
        self._status_vars: dict[str, Node] = {}
        self._event: Any = None
        self.users: LineUserManager | None = None
        self.results = 0
        self.triggers = 0
        #: the agent's :class:`~edge_agent.feedback.service.FeedbackService` (None: not enabled)
        self._feedback = getattr(agent, "feedback", None)
        self.feedback = 0
        self._missed = 0
        self._late = 0

    def start(self) -> None:
        self._loop.start()
        self._loop.run(self._start(), timeout=60.0)

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._loop.run(self._server.stop(), timeout=5.0)
            except Exception as exc:
                log.warning("stopping the OPC UA server failed: %s", exc)
        self._loop.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "results": self.results,
            "triggers": self.triggers,
            "feedback": self.feedback,
            "refused_logins": 0 if self.users is None else self.users.refused,
        }

    async def _start(self) -> None:
        s = self.section
        users = read_users(Path(s.users_file)) if s.users_file else {}
        certs = read_certificates(Path(s.trusted_clients_dir)) if s.trusted_clients_dir else set()
        self.users = LineUserManager(users, certs, s.allow_anonymous)
        server = Server(user_manager=self.users)  # type: ignore[arg-type]
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name(f"edgeline vision system {self.device_id}")
        await server.set_application_uri(self.application_uri)
        policies = [_POLICIES[s.policy]]
        if s.allow_unencrypted:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken, ua.X509IdentityToken]
        if s.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if s.certificate and s.private_key:
            crt, key = Path(s.certificate), Path(s.private_key)
        else:
            crt, key = ensure_certificate(Path(s.pki_dir), self.application_uri, f"edgeline {self.device_id}")
        await server.load_certificate(str(crt), format=_format(crt))
        await server.load_private_key(str(key), format=_format(key))
        await self._address_space(server, await server.register_namespace(s.namespace))
        await server.start()
        self._server = server

    async def _address_space(self, server: Server, idx: int) -> None:
        vs = await server.nodes.objects.add_object(*_ids(idx, "VisionSystem"))
        results = await vs.add_folder(*_ids(idx, "VisionSystem.Results"))
        for name, vtype in RESULT_VARS:
            zero = ua.Variant(_zero(vtype), vtype)
            self._vars[name] = await results.add_variable(*_ids(idx, f"VisionSystem.Results.{name}"), zero)
        status = await vs.add_folder(*_ids(idx, "VisionSystem.Status"))
        for name, vtype in (("State", V.String), ("MissedTriggers", V.UInt32), ("LateResults", V.UInt32)):
            zero = ua.Variant(_zero(vtype), vtype)
            self._status_vars[name] = await status.add_variable(*_ids(idx, f"VisionSystem.Status.{name}"), zero)
        await self._status_vars["State"].write_value(ua.Variant(self._status(), V.String))
        part = ua.Argument()
        part.Name, part.DataType, part.ValueRank = "PartId", ua.NodeId(ua.Int32(ua.ObjectIds.String)), -1
        part.Description = ua.LocalizedText("the part's id; empty: one is assigned")
        tid = ua.Argument()
        tid.Name, tid.DataType, tid.ValueRank = "TriggerId", ua.NodeId(ua.Int32(ua.ObjectIds.UInt32)), -1
        assigned = ua.Argument()
        assigned.Name, assigned.DataType, assigned.ValueRank = "PartId", ua.NodeId(ua.Int32(ua.ObjectIds.String)), -1
        await vs.add_method(*_ids(idx, "VisionSystem.Trigger"), self._trigger, [part], [tid, assigned])
        if self._feedback is not None:
            args = [_arg("ResultId", ua.ObjectIds.String, "the result's id (Results/ResultId)")]
            args.append(_arg("Truth", ua.ObjectIds.String, "confirm, ok, defect or a class label"))
            outs = [_arg("Truth", ua.ObjectIds.String, "the truth stored"), _arg("Replaced", ua.ObjectIds.UInt32, "")]
            await vs.add_method(*_ids(idx, "VisionSystem.Feedback"), self._on_feedback, args, outs)
        etype = await server.create_custom_event_type(
            idx, "ResultReadyEventType", ua.ObjectIds.BaseEventType, [(n, t) for n, t in EVENT_FIELDS]
        )
        self._event = await server.get_event_generator(etype, vs.nodeid)

    # A method refuses by RETURNING a status code: asyncua answers any exception a method raises,
    # its own status code errors included, with BadUnexpectedError.
    async def _trigger(self, parent: ua.NodeId, part_id: ua.Variant) -> list[ua.Variant] | ua.StatusCode:
        value = part_id.Value if isinstance(part_id, ua.Variant) else part_id
        if value is not None and (not isinstance(value, str) or len(value) > 128):
            return _status(ua.StatusCodes.BadInvalidArgument)
        t = self._submit(value or "", None, "opcua")
        if t is None:
            return _status(ua.StatusCodes.BadInvalidState)
        self.triggers += 1
        return [ua.Variant(int(t.trigger_id), V.UInt32), ua.Variant(t.part_id, V.String)]

    async def _on_feedback(self, parent: ua.NodeId, result_id: Any, truth: Any) -> list[ua.Variant] | ua.StatusCode:
        service = self._feedback
        assert service is not None
        rid = result_id.Value if isinstance(result_id, ua.Variant) else result_id
        value = truth.Value if isinstance(truth, ua.Variant) else truth
        try:
            req = FeedbackRequest(truth=check_truth_text(value), result_id=check_id(rid, "ResultId"))
        except FeedbackError as exc:
            service.refuse("opcua", exc)
            return _status(ua.StatusCodes.BadInvalidArgument)
        got = await asyncio.to_thread(service.submit, req, "opcua")
        if got.stored is None:
            return _status(FEEDBACK_STATUS.get(got.reason, ua.StatusCodes.BadInvalidArgument))
        self.feedback += 1
        return [ua.Variant(got.stored.truth, V.String), ua.Variant(got.stored.replaced, V.UInt32)]

    # -- the sink side (the bus's worker thread) ------------------------------------------------------
    def write(self, record: Record) -> None:
        if record.get("type") == "verdict":
            self._loop.run(self._publish(record), timeout=5.0)

    def close(self) -> None:
        pass

    async def _publish(self, rec: Record) -> None:
        server = self._server
        if server is None:
            return
        values = result_values(rec)
        state = values["ResultState"]
        self._missed += state in ("missed", "refused")
        self._late += state == "late"
        # every variable first, the counter last: a client polling the counter reads a whole result
        for name, vtype in RESULT_VARS:
            if name != "ResultCounter":
                await server.write_attribute_value(
                    self._vars[name].nodeid, ua.DataValue(ua.Variant(values[name], vtype))
                )
        for name, v in (
            ("State", ua.Variant(self._status(), V.String)),
            ("MissedTriggers", ua.Variant(self._missed, V.UInt32)),
            ("LateResults", ua.Variant(self._late, V.UInt32)),
        ):
            await server.write_attribute_value(self._status_vars[name].nodeid, ua.DataValue(v))
        await server.write_attribute_value(
            self._vars["ResultCounter"].nodeid, ua.DataValue(ua.Variant(values["ResultCounter"], V.UInt32))
        )
        if rec.get("result_id"):
            ev = self._event.event
            for name, _ in EVENT_FIELDS:
                setattr(ev, name, values[name])
            await self._event.trigger(message=f"{values['PartId']}: {state} {values['Verdict']}".strip())
        self.results += 1


def _ids(idx: int, path: str) -> tuple[ua.NodeId, ua.QualifiedName]:
    """A stable string NodeId (``ns=<idx>;s=VisionSystem.Results.Verdict``) and the browse name (the
    path's last part), so that a PLC or MES maps the tags once and calls ``Trigger`` without browsing."""
    return ua.NodeId(ua.String(path), ua.Int16(idx)), ua.QualifiedName(path.rsplit(".", 1)[-1], idx)


def _status(code: int) -> ua.StatusCode:
    return ua.StatusCode(ua.UInt32(code))


def _arg(name: str, type_id: int, description: str) -> ua.Argument:
    a = ua.Argument()
    a.Name, a.DataType, a.ValueRank = name, ua.NodeId(ua.Int32(type_id)), -1
    a.Description = ua.LocalizedText(description)
    return a


def _zero(vtype: ua.VariantType) -> Any:
    return {V.String: "", V.Double: 0.0, V.Boolean: False}.get(vtype, 0)


def _format(path: Path) -> str:
    """asyncua tells PEM from DER by the file name; tell it by the content."""
    return "pem" if path.read_bytes().lstrip().startswith(b"-----BEGIN") else "der"
