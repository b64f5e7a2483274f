"""The typed device configuration: one TOML file per device, validated strictly.

Every section forbids unknown keys and is immutable once loaded. The ``[cloud]``, ``[updater]`` and
``[telemetry]`` sections belong to the delivery and telemetry work and are imported unchanged; all
sections have defaults, so a profile names only what differs on its device class.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgeline.core.protocol.topics import SEGMENT_PATTERN as TOPIC_SEGMENT
from edgeline.core.protocol.topics import STATION_SEPARATOR, segment_problem, unit_problem
from firmware_configs.base import Section
from firmware_configs.cloud_section import CloudSection
from firmware_configs.feedback_section import FeedbackSection
from firmware_configs.line_section import LineSection, TriggerSection
from firmware_configs.remote_config_section import DecisionSection, RemoteConfigSection
from firmware_configs.shadow_section import ShadowSection
from firmware_configs.station_section import StationSection, check_station_list
from firmware_configs.supervisor_section import SupervisorSection
from firmware_configs.telemetry_section import TelemetrySection
from firmware_configs.updater_section import UpdaterSection

#: Same alphabet as an MQTT topic segment: a device id and group names end up in topics.
SEGMENT_PATTERN = TOPIC_SEGMENT

SourceKind = Literal["usb", "url", "file", "folder"]

#: Decoded-image pixel limit (width x height declared in the header, checked before decoding): 25 MP
#: covers 4K and 20 MP line cameras; a 20000x20000 "bomb" (400 MP, 1.2 GB as BGR) is refused.
DEFAULT_MAX_IMAGE_PIXELS = 25_000_000
MAX_IMAGE_PIXELS_CEILING = 1 << 30
QueuePolicy = Literal["drop_oldest", "block"]


class DeviceSection(Section):
    """``[device]``: who this device is. ``id`` and ``groups`` select which deployments apply."""

    #: a topic segment; ``<device>~<station>`` is the address a station's own configuration gets
    #: (docs/stations.md)
    id: str
    groups: tuple[str, ...] = ()
    hardware_class: str = Field(default="generic", pattern=SEGMENT_PATTERN)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        problem = unit_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v

    @field_validator("groups")
    @classmethod
    def _groups(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for g in v:
            problem = segment_problem(g)
            if problem is not None:
                raise ValueError(f"group {g!r} {problem}")
        if len(set(v)) != len(v):
            raise ValueError("groups must not repeat")
        return v


class SourceSection(Section):
    """``[source]``: where frames come from.

    ``kind`` picks the field that must be set: ``usb`` → ``index``; ``url`` → ``url`` (rtsp://, http://,
    https://); ``file`` → ``path`` of a video; ``folder`` → ``path`` of an image directory.
    """

    kind: SourceKind
    index: int | None = Field(default=None, ge=0, le=63)
    url: str | None = None
    path: str | None = None
    #: video file / folder: start again at the end instead of stopping
    loop: bool = False
    #: pace file/folder sources to this rate (frames/s); 0 = as fast as inference takes them
    max_fps: float = Field(default=0.0, ge=0.0, le=1000.0)
    #: requested capture size for USB cameras (0 = camera default)
    width: int = Field(default=0, ge=0, le=8192)
    height: int = Field(default=0, ge=0, le=8192)
    open_timeout_ms: int = Field(default=5000, ge=100, le=120_000)
    read_timeout_ms: int = Field(default=5000, ge=100, le=120_000)
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    reconnect_min_s: float = Field(default=0.5, gt=0.0, le=600.0)
    #: the backoff cap: a camera that comes back is seen again within this (jittered down to half)
    reconnect_max_s: float = Field(default=2.0, gt=0.0, le=3600.0)
    #: while waiting to reconnect a network camera, try a TCP connect this often and reconnect as
    #: soon as the camera answers again after refusing; 0 = wait out the backoff
    reconnect_probe_s: float = Field(default=0.25, ge=0.0, le=60.0)
    #: stall watchdog: no new frame for this many frame intervals (measured; 0 = watchdog off) ...
    stall_intervals: float = Field(default=10.0, ge=0.0, le=100_000.0)
    #: ... but never less than stall_min_s nor more than stall_max_s → reconnect. A live capture is
    #: opened with a read timeout of at most stall_max_s, so a blocked read ends by then.
    stall_min_s: float = Field(default=2.0, gt=0.0, le=600.0)
    stall_max_s: float = Field(default=3.0, gt=0.0, le=600.0)
    #: frames (or folder images) larger than this many pixels are refused; images before decoding
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1, le=MAX_IMAGE_PIXELS_CEILING)
    #: give up (state FAILED) after this many failed reconnects in a row; 0 = never give up
    max_reconnects: int = Field(default=0, ge=0)
    queue_size: int = Field(default=4, ge=1, le=10_000)
    #: backpressure policy; default drop_oldest for live cameras (usb, url), block for files and folders
    queue_policy: QueuePolicy | None = None
    #: ``free``: inspect every frame; ``trigger``: inspect the frame a trigger asks for (``[trigger]``)
    mode: Literal["free", "trigger"] = "free"

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("rtsp://", "rtsps://", "http://", "https://")):
            raise ValueError("url must start with rtsp://, rtsps://, http:// or https://")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> SourceSection:
        need = {"usb": "index", "url": "url", "file": "path", "folder": "path"}[self.kind]
        if getattr(self, need) is None:
            raise ValueError(f"source kind {self.kind!r} needs the key '{need}'")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        if self.stall_max_s < self.stall_min_s:
            raise ValueError("stall_max_s must be >= stall_min_s")
        return self

    @property
    def live(self) -> bool:
        return self.kind in ("usb", "url")

    @property
    def policy(self) -> QueuePolicy:
        if self.queue_policy is not None:
            return self.queue_policy
        return "drop_oldest" if self.live else "block"


class ModelSection(Section):
    """``[model]``: an optional initial bundle. Without one the agent runs and reports ``no_model``
    until the updater delivers a model."""

    bundle: str | None = None
    #: trust store for the initial bundle; defaults to ``updater.trust_file``
    trust_file: str | None = None
    #: accept an expired initial bundle (a device offline for months keeps inspecting)
    allow_expired: bool = True


class InferenceSection(Section):
    """``[inference]``: ONNX Runtime and per-frame work."""

    threads: int = Field(default=1, ge=1, le=64)
    #: compute input statistics (for drift) on every Nth frame; 0 = never. They cost ~60 us per frame
    #: (Canny, Laplacian) against ~450 us for a whole small frame: every 10th keeps the agent within
    #: 10% of a bare loop at full speed and still gives telemetry 3 samples/s at 30 frames/s.
    stats_every: int = Field(default=10, ge=0)
    #: recent latencies kept for percentiles (a bounded ring)
    latency_window: int = Field(default=2048, ge=16, le=1_000_000)


class SinkCommon(Section):
    enabled: bool = True
    #: which verdicts go to this sink: every frame, or defects (and uncertain results) only
    include: Literal["all", "defects"] = "all"
    #: also send local events (model activated or rejected, camera state, no model)
    events: bool = True
    #: records waiting for this sink; when full the oldest is dropped and counted
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)


class JsonlSinkSection(SinkCommon):
    path: str
    max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    backups: int = Field(default=5, ge=0, le=1000)
    fsync: bool = False


class MqttSinkSection(SinkCommon):
    """Verdicts on a LOCAL broker topic (``<topic_prefix>/<device id>/verdicts``), never the cloud."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    topic_prefix: str = Field(default="line", pattern=SEGMENT_PATTERN)
    qos: int = Field(default=0, ge=0, le=1)
    protocol: Literal["5", "3.1.1"] = "3.1.1"
    #: at start-up, hold the first records this long for the first connection (on the sink's thread)
    connect_wait_s: float = Field(default=3.0, ge=0.0, le=60.0)
    username: str | None = None
    password_file: str | None = None


class WebhookSinkSection(SinkCommon):
    url: str
    timeout_s: float = Field(default=2.0, gt=0.0, le=120.0)
    headers: dict[str, str] = {}

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("webhook url must start with http:// or https://")
        return v


class CommandSinkSection(SinkCommon):
    """Run a command per record (JSON on stdin) or keep one running and feed it JSON lines."""

    argv: tuple[str, ...] = Field(min_length=1)
    mode: Literal["each", "stream"] = "each"
    timeout_s: float = Field(default=5.0, gt=0.0, le=600.0)
    include: Literal["all", "defects"] = "defects"


class SinksSection(Section):
    jsonl: JsonlSinkSection | None = None
    mqtt: MqttSinkSection | None = None
    webhook: WebhookSinkSection | None = None
    command: CommandSinkSection | None = None


class StatusSection(Section):
    """``[status]``: the status file read by ``edgeline agent status`` (written atomically)."""

    path: str = "/run/edgeline/status.json"
    interval_s: float = Field(default=2.0, gt=0.0, le=3600.0)


class ApiSection(Section):
    """``[api]``: the local prediction API (POST an image, the Open Inference Protocol, GET /status,
    GET /metrics). Off loopback it needs a bearer token (``token_file``)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    #: 0 picks a free port (reported in the status file)
    port: int = Field(default=8571, ge=0, le=65535)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    #: an image declaring more pixels than this is refused (422) before it is decoded
    max_image_pixels: int = Field(default=DEFAULT_MAX_IMAGE_PIXELS, ge=1, le=MAX_IMAGE_PIXELS_CEILING)
    #: a file holding the bearer token every request must carry (``Authorization: Bearer <token>``);
    #: required when ``host`` is not a loopback address
    token_file: str | None = None

    @field_validator("token_file")
    @classmethod
    def _token_file(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("api.token_file must be a path (omit it for no token)")
        return v

    @model_validator(mode="after")
    def _token_off_loopback(self) -> ApiSection:
        if self.enabled and self.token_file is None and not is_loopback(self.host):
            raise ValueError(
                f"api.host {self.host!r} is not a loopback address: set api.token_file (a file holding the "
                "bearer token clients must send), or bind to 127.0.0.1"
            )
        return self


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (127.0.0.0/8, ::1); False for anything else,
    a wildcard (0.0.0.0, ::) or another host name included."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class DeviceConfig(Section):
    device: DeviceSection
    source: SourceSection
    model: ModelSection = ModelSection()
    inference: InferenceSection = InferenceSection()
    sinks: SinksSection = SinksSection()
    status: StatusSection = StatusSection()
    api: ApiSection = ApiSection()
    cloud: CloudSection = CloudSection()
    updater: UpdaterSection = UpdaterSection()
    telemetry: TelemetrySection = TelemetrySection()
    trigger: TriggerSection = TriggerSection()
    line: LineSection = LineSection()
    feedback: FeedbackSection = FeedbackSection()
    shadow: ShadowSection = ShadowSection()
    decision: DecisionSection = DecisionSection()
    remote_config: RemoteConfigSection = RemoteConfigSection()
    #: ``[supervisor]``: telling a hung station from a slow one (with ``[[station]]`` tables only)
    supervisor: SupervisorSection = SupervisorSection()
    #: ``[[station]]``: several inspection stations on this device, each its own unit (docs/stations.md)
    station: tuple[StationSection, ...] = ()

    @field_validator("station", mode="before")
    @classmethod
    def _station_tables(cls, v: object) -> object:
        if not isinstance(v, list | tuple):
            raise ValueError('write one [[station]] table per station (an array of tables: [[station]] name = "...")')
        return v

    @field_validator("station")
    @classmethod
    def _stations(cls, v: tuple[StationSection, ...]) -> tuple[StationSection, ...]:
        return check_station_list(v)

    @model_validator(mode="after")
    def _stations_of_a_device(self) -> DeviceConfig:
        if self.station and STATION_SEPARATOR in self.device.id:
            raise ValueError(
                f"device.id {self.device.id!r} is already a station address: a device with [[station]] "
                f"tables has a plain id (its stations are addressed <device>{STATION_SEPARATOR}<station>)"
            )
        return self

    @property
    def feedback_path(self) -> str:
        """The feedback store's file: ``feedback.path``, or ``<updater.state_dir>/feedback.db``."""
        return self.feedback.path or f"{self.updater.state_dir.rstrip('/')}/feedback.db"

    @property
    def trust_file(self) -> str:
        return self.model.trust_file or self.updater.trust_file
