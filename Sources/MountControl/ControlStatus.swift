/// The status objects of the control protocol: the service, each mount, and what a reload or an
/// upgrade did (see docs/control-protocol.md, "The status schema").

/// The service as a whole, as `status` reports it.
public struct ServiceStatus: Codable, Sendable, Equatable {
  /// READY=1 was sent: every required mount has been confirmed (it stays true afterwards).
  public var ready: Bool
  /// The STATUS text the service manager shows, e.g. "2/3 mounts ready; photos: starting".
  public var status: String
  /// A reload is applied and waits for its mounts to settle.
  public var reloading: Bool
  /// SIGTERM/SIGINT (or a failed required mount) stops everything; the daemon then exits.
  public var shuttingDown: Bool
  /// The configuration files in use, main file first.
  public var configFiles: [String]
  public var pid: Int32
  /// The daemon's release and commit, e.g. "0.3.0 (commit 1a2b3c4d5e6f)": after an upgrade,
  /// the new binary's.
  public var version: String
  /// When the daemon started (seconds since the epoch); an upgrade keeps it.
  public var startedAt: Double
  /// Upgrades (`mountctl upgrade`, SIGUSR2) since the start.
  public var upgrades: Int
  /// When the last upgrade took place (seconds since the epoch), if one did.
  public var lastUpgradeAt: Double?

  public init(
    ready: Bool, status: String, reloading: Bool, shuttingDown: Bool, configFiles: [String],
    pid: Int32, version: String = MountSupervisorRelease.identity, startedAt: Double = 0,
    upgrades: Int = 0, lastUpgradeAt: Double? = nil
  ) {
    self.ready = ready
    self.status = status
    self.reloading = reloading
    self.shuttingDown = shuttingDown
    self.configFiles = configFiles
    self.pid = pid
    self.version = version
    self.startedAt = startedAt
    self.upgrades = upgrades
    self.lastUpgradeAt = lastUpgradeAt
  }

  enum CodingKeys: String, CodingKey {
    case ready, status, reloading, pid, version, upgrades
    case shuttingDown = "shutting_down"
    case configFiles = "config_files"
    case startedAt = "started_at"
    case lastUpgradeAt = "last_upgrade_at"
  }

  /// Writes nulls explicitly instead of leaving keys out.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(ready, forKey: .ready)
    try container.encode(status, forKey: .status)
    try container.encode(reloading, forKey: .reloading)
    try container.encode(shuttingDown, forKey: .shuttingDown)
    try container.encode(configFiles, forKey: .configFiles)
    try container.encode(pid, forKey: .pid)
    try container.encode(version, forKey: .version)
    try container.encode(startedAt, forKey: .startedAt)
    try container.encode(upgrades, forKey: .upgrades)
    try container.encode(lastUpgradeAt, forKey: .lastUpgradeAt)
  }
}

/// What an upgrade did, as the new binary reports it to the `mountctl upgrade` that asked.
public struct UpgradeResult: Codable, Sendable, Equatable {
  /// The release and commit before and after.
  public var from: String
  public var to: String
  /// From the request to the new binary serving its control socket.
  public var milliseconds: Double
  /// Mounts carried over, worker and mount untouched.
  public var mountsKept: Int

  public init(from: String, to: String, milliseconds: Double, mountsKept: Int) {
    self.from = from
    self.to = to
    self.milliseconds = milliseconds
    self.mountsKept = mountsKept
  }

  enum CodingKeys: String, CodingKey {
    case from, to, milliseconds
    case mountsKept = "mounts_kept"
  }
}

/// One mount, as `status` and the answers to `start`/`stop`/`restart`/`wait-ready` report it.
///
/// Every key is always present (null where it does not apply), so that scripts can rely on
/// the shape.
public struct MountStatus: Codable, Sendable, Equatable {
  public var name: String
  /// One of `stopped`, `starting`, `ready`, `backoff`, `stopping`, `exited`, `failed`.
  public var state: String
  /// A sentence about the state, e.g. "starting, attempt 2" or "waiting for media".
  public var detail: String
  /// The worker's pid while one runs.
  public var pid: Int32?
  /// Seconds since the mount was confirmed ready, while it is ready.
  public var uptimeSeconds: Double?
  /// Starts after the first one.
  public var restarts: Int
  public var mountpoint: String
  public var required: Bool
  /// An operator stopped it; it stays stopped until started.
  public var stoppedByOperator: Bool
  /// The most recent failure, with the worker's own words; kept after a recovery.
  public var lastError: String?
  /// The last lines the worker printed before that failure.
  public var lastErrorOutput: [String]
  /// The worker's latest `STATUS=` text.
  public var workerStatus: String?
  /// Times the mount was found hung (or aborted by an operator) and its connection aborted.
  public var hangs: Int
  /// Crashes of a kit worker that a successor resumed on the live FUSE connection, without the
  /// mount going away (counted among `restarts` too).
  public var resumes: Int
  /// Milliseconds from the last resumed crash to the successor's READY: how long accesses
  /// waited.
  public var lastResumeGapMilliseconds: Double?
  /// The supervisor holds the worker's FUSE connection: a crash will be resumed.
  public var holdsConnection: Bool

  public init(
    name: String, state: String, detail: String, pid: Int32?, uptimeSeconds: Double?, restarts: Int,
    mountpoint: String, required: Bool, stoppedByOperator: Bool, lastError: String?,
    lastErrorOutput: [String], workerStatus: String?, hangs: Int = 0, resumes: Int = 0,
    lastResumeGapMilliseconds: Double? = nil, holdsConnection: Bool = false
  ) {
    self.name = name
    self.state = state
    self.detail = detail
    self.pid = pid
    self.uptimeSeconds = uptimeSeconds
    self.restarts = restarts
    self.mountpoint = mountpoint
    self.required = required
    self.stoppedByOperator = stoppedByOperator
    self.lastError = lastError
    self.lastErrorOutput = lastErrorOutput
    self.workerStatus = workerStatus
    self.hangs = hangs
    self.resumes = resumes
    self.lastResumeGapMilliseconds = lastResumeGapMilliseconds
    self.holdsConnection = holdsConnection
  }

  /// Decodes a daemon's answer; one from before resumes existed has none.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    name = try container.decode(String.self, forKey: .name)
    state = try container.decode(String.self, forKey: .state)
    detail = try container.decode(String.self, forKey: .detail)
    pid = try container.decodeIfPresent(Int32.self, forKey: .pid)
    uptimeSeconds = try container.decodeIfPresent(Double.self, forKey: .uptimeSeconds)
    restarts = try container.decode(Int.self, forKey: .restarts)
    mountpoint = try container.decode(String.self, forKey: .mountpoint)
    required = try container.decode(Bool.self, forKey: .required)
    stoppedByOperator = try container.decode(Bool.self, forKey: .stoppedByOperator)
    lastError = try container.decodeIfPresent(String.self, forKey: .lastError)
    lastErrorOutput = try container.decode([String].self, forKey: .lastErrorOutput)
    workerStatus = try container.decodeIfPresent(String.self, forKey: .workerStatus)
    resumes = try container.decodeIfPresent(Int.self, forKey: .resumes) ?? 0
    lastResumeGapMilliseconds = try container.decodeIfPresent(
      Double.self, forKey: .lastResumeGapMilliseconds)
    holdsConnection = try container.decodeIfPresent(Bool.self, forKey: .holdsConnection) ?? false
    hangs = try container.decodeIfPresent(Int.self, forKey: .hangs) ?? 0
  }

  public var isReady: Bool { state == "ready" }

  enum CodingKeys: String, CodingKey {
    case name, state, detail, pid, restarts, mountpoint, required, hangs
    case uptimeSeconds = "uptime_seconds"
    case stoppedByOperator = "stopped_by_operator"
    case lastError = "last_error"
    case lastErrorOutput = "last_error_output"
    case workerStatus = "worker_status"
    case resumes
    case lastResumeGapMilliseconds = "last_resume_gap_ms"
    case holdsConnection = "holds_connection"
  }

  /// Writes nulls explicitly instead of leaving keys out.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(name, forKey: .name)
    try container.encode(state, forKey: .state)
    try container.encode(detail, forKey: .detail)
    try container.encode(pid, forKey: .pid)
    try container.encode(uptimeSeconds, forKey: .uptimeSeconds)
    try container.encode(restarts, forKey: .restarts)
    try container.encode(mountpoint, forKey: .mountpoint)
    try container.encode(required, forKey: .required)
    try container.encode(stoppedByOperator, forKey: .stoppedByOperator)
    try container.encode(lastError, forKey: .lastError)
    try container.encode(lastErrorOutput, forKey: .lastErrorOutput)
    try container.encode(workerStatus, forKey: .workerStatus)
    try container.encode(hangs, forKey: .hangs)
    try container.encode(resumes, forKey: .resumes)
    try container.encode(lastResumeGapMilliseconds, forKey: .lastResumeGapMilliseconds)
    try container.encode(holdsConnection, forKey: .holdsConnection)
  }
}

/// What a reload changed, by mount name.
public struct ReloadResult: Codable, Sendable, Equatable {
  public var added: [String]
  public var removed: [String]
  /// Restarted because a field that affects the worker changed.
  public var changed: [String]
  /// Left alone: same worker, same pid, never remounted.
  public var unchanged: [String]

  public init(added: [String], removed: [String], changed: [String], unchanged: [String]) {
    self.added = added
    self.removed = removed
    self.changed = changed
    self.unchanged = unchanged
  }
}
