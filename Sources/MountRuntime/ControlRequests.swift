import Glibc
import MountConfig
import MountControl
import MountCore

/// The requests of the control protocol: who may send them, what they do, and when a waiting
/// one is answered.
extension ControlServer {
  func handle(_ line: [UInt8], from client: Client) {
    client.requestDeadline = nil
    let request: ControlRequest
    do {
      let envelope = try ControlProtocol.decode(ControlEnvelope.self, from: line)
      guard envelope.version == ControlProtocol.version else {
        respond(
          client,
          .failure(
            .unsupportedVersion,
            "this mountsupd speaks control protocol version \(ControlProtocol.version), the request version "
              + "\(envelope.version): use the mountctl of the same release"))
        return
      }
      request = try ControlProtocol.decode(ControlRequest.self, from: line)
    } catch {
      respond(client, .failure(.badRequest, "bad request: \(ControlProtocol.describe(error))"))
      return
    }
    if let refusal = refusal(of: request.command, for: client.peer) {
      logger.warning(
        "control client \(client.peer.description): refused \(request.command.rawValue): \(refusal)"
      )
      respond(client, .failure(.permissionDenied, refusal))
      return
    }
    let core = host.supervisorCore
    switch request.command {
    case .status:
      guard let names = resolve(request.names, for: client) else { return }
      respond(client, ControlResponse(service: serviceStatus(), mounts: statuses(names)))

    case .start, .stop, .restart, .abort:
      guard !request.names.isEmpty else {
        respond(
          client, .failure(.badRequest, "\(request.command.rawValue) needs at least one mount name")
        )
        return
      }
      guard let names = resolve(request.names, for: client) else { return }
      if core.shuttingDown, request.command != .stop {
        respond(
          client,
          .failure(.shuttingDown, "mountsupd is stopping every mount and exits; nothing is started")
        )
        return
      }
      let idle = names.filter { core.machines[$0]?.pid == nil }
      if request.command == .abort, !idle.isEmpty {
        let states = idle.map { "\($0) is \(core.detail(of: $0))" }.joined(separator: "; ")
        respond(client, .failure(.failed, "no worker runs to abort: \(states)"))
        return
      }
      let action: OperatorAction =
        switch request.command {
        case .start: .start
        case .stop: .stop
        case .abort: .abort
        default: .restart
        }
      logger.notice(
        "\(client.peer.description): \(request.command.rawValue) \(names.joined(separator: " "))")
      host.submit(action, names)
      // Answered after the supervisor's step: at once for --no-block, else when the mounts
      // got there.
      client.pending = .operation(action, names, remaining: request.noBlock ? [] : Set(names))
      submitted(client)

    case .upgrade:
      logger.notice(
        "\(client.peer.description): upgrade to \(request.binary ?? "the binary mountsupd was started from")"
      )
      client.pending = .upgrade
      host.requestUpgrade(binary: request.binary, requester: client)

    case .reload:
      logger.notice("\(client.peer.description): reload")
      client.pending = .reload
      host.requestReload { [weak self, weak client] outcome in
        guard let self, let client else { return }
        respond(client, response(to: outcome))
      }

    case .metrics:
      let text = String(decoding: host.metricsExposition(), as: UTF8.self)
      respond(client, ControlResponse(metrics: text))

    case .logs:
      guard request.names.count == 1 else {
        respond(client, .failure(.badRequest, "logs needs exactly one mount name"))
        return
      }
      guard let names = resolve(request.names, for: client) else { return }
      guard (request.lines ?? 0) >= 0 else {
        respond(client, .failure(.badRequest, "lines must not be negative"))
        return
      }
      let captured = host.outputLines(of: names[0])
      let lines = request.lines.map { Array(captured.suffix($0)) } ?? captured
      sendLogs(lines, of: names[0], follow: request.follow, to: client)

    case .waitReady:
      let names: [String]
      if request.names.isEmpty {
        names = core.order.filter { !core.held.contains($0) }
      } else {
        guard let resolved = resolve(request.names, for: client) else { return }
        names = resolved
      }
      guard (request.timeoutMilliseconds ?? 0) >= 0 else {
        respond(client, .failure(.badRequest, "timeout_ms must not be negative"))
        return
      }
      let timeout = request.timeoutMilliseconds.map { Duration.milliseconds($0) }
      client.pending = .waitReady(
        names, remaining: Set(names), deadline: timeout.map { .now() + $0 }, timeout: timeout)
      evaluate(client, changed: nil)
    }
  }

  /// Answers the client's waiting request if the mounts have got where it waits for. Only the
  /// mounts in `changed` are looked at again (all of them when nil): a request that waits for
  /// 1,000 mounts costs one check per mount that changes.
  func evaluate(_ client: Client, changed: Set<String>?) {
    let core = host.supervisorCore
    switch client.pending {
    case .operation(let action, let names, var remaining):
      // An abort ends in a restart by the policy, through its restart delay.
      let goal: SupervisorCore.Goal =
        switch action {
        case .stop: .settled
        case .abort: .ready(failingOnRetry: false)
        case .start, .restart: .ready(failingOnRetry: true)
        }
      guard let outcome = advance(&remaining, toward: goal, changed: changed, names: names, core)
      else {
        client.pending = .operation(action, names, remaining: remaining)
        return
      }
      respond(client, outcome)
    case .waitReady(let names, var remaining, let deadline, let timeout):
      guard
        let outcome = advance(
          &remaining, toward: .ready(failingOnRetry: false), changed: changed, names: names, core)
      else {
        client.pending = .waitReady(
          names, remaining: remaining, deadline: deadline, timeout: timeout)
        return
      }
      respond(client, outcome)
    case .reload, .logs, .follow, .upgrade, nil:
      return
    }
  }

  /// Removes the mounts that reached the goal from `remaining`; the answer once all have, or
  /// as soon as one cannot, else nil.
  private func advance(
    _ remaining: inout Set<String>, toward goal: SupervisorCore.Goal, changed: Set<String>?,
    names: [String], _ core: SupervisorCore
  ) -> ControlResponse? {
    let candidates = changed.map { remaining.intersection($0) } ?? remaining
    var failed = false
    for name in candidates {
      switch core.progress(of: name, toward: goal) {
      case .reached: remaining.remove(name)
      case .pending: break
      case .failed: failed = true
      }
    }
    if failed {
      let failures = names.compactMap { name -> String? in
        guard case .failed(let reason) = core.progress(of: name, toward: goal) else { return nil }
        return "\(name): \(reason)"
      }
      return .failure(.failed, failures.joined(separator: "; "), mounts: statuses(names))
    }
    return remaining.isEmpty ? ControlResponse(mounts: statuses(names)) : nil
  }

  private func response(to outcome: ReloadCoordinator.Outcome) -> ControlResponse {
    switch outcome {
    case .applied(let summary):
      let names = summary.added + summary.changed
      return ControlResponse(
        mounts: statuses(host.supervisorCore.order.filter(names.contains)),
        reload: ReloadResult(
          added: summary.added, removed: summary.removed, changed: summary.changed,
          unchanged: summary.unchanged))
    case .invalid(let text):
      return .failure(.invalidConfig, "the new configuration is invalid; nothing changed: \(text)")
    case .abandoned:
      return .failure(
        .shuttingDown, "mountsupd began stopping every mount before the reload settled")
    }
  }

  /// The names as given (duplicates dropped), all mounts when none are; answers
  /// `unknown-mount` and returns nil when one is not configured.
  private func resolve(_ requested: [String], for client: Client) -> [String]? {
    let core = host.supervisorCore
    guard !requested.isEmpty else { return core.order }
    var names: [String] = []
    for name in requested where !names.contains(name) { names.append(name) }
    let unknown = names.filter { core.machines[$0] == nil }
    guard unknown.isEmpty else {
      let known = core.order.isEmpty ? "none" : core.order.joined(separator: ", ")
      let quoted = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
      respond(
        client,
        .failure(.unknownMount, "no mount named \(quoted) is configured (configured: \(known))"))
      return nil
    }
    return names
  }

  /// Why the peer may not send this command, or nil if it may: root and `admin_group` may do
  /// everything, `status_group` may read, nobody else anything.
  private func refusal(of command: ControlCommand, for peer: ControlPeer) -> String? {
    guard peer.uid != 0 else { return nil }
    let settings = host.currentConfiguration.supervisor
    let adminGroup = settings.adminGroup
    let statusGroup = settings.statusGroup
    let ids = adminAndStatusGroupIDs
    if let admin = ids.admin, peer.isMember(of: admin) { return nil }
    let reads = ids.status.map(peer.isMember(of:)) ?? false
    if reads, !command.changesState { return nil }
    let who = peer.description
    if reads, let statusGroup {
      let needs =
        adminGroup.map { "root or membership of admin_group \"\($0)\"" }
        ?? "root (no admin_group is configured)"
      return
        "permission denied: \(command.rawValue) changes what runs and needs \(needs); \(who) is only in "
        + "status_group \"\(statusGroup)\", which may read status, logs and metrics and wait for readiness"
    }
    var groups: [String] = []
    if let adminGroup { groups.append("admin_group \"\(adminGroup)\" (may do everything)") }
    if let statusGroup {
      groups.append("status_group \"\(statusGroup)\" (may read status and logs)")
    }
    guard !groups.isEmpty else {
      return
        "permission denied: \(who) is not root, and [supervisor] configures no admin_group or status_group, "
        + "so only root may use the control socket"
    }
    return
      "permission denied: \(who) is neither root nor a member of \(groups.joined(separator: " or "))"
  }

  private func serviceStatus() -> ServiceStatus {
    let core = host.supervisorCore
    return ServiceStatus(
      ready: core.readyAnnounced, status: host.serviceStatus, reloading: host.isReloading,
      shuttingDown: core.shuttingDown, configFiles: host.currentConfiguration.files, pid: getpid(),
      startedAt: host.lifetime.startedAt, upgrades: host.lifetime.upgrades,
      lastUpgradeAt: host.lifetime.lastUpgradeAt)
  }

  /// The status of each named mount that is still known, in the order given.
  func statuses(_ names: [String]) -> [MountStatus] {
    let core = host.supervisorCore
    let now = MonotonicInstant.now()
    return names.compactMap { name in
      guard let report = core.report(of: name) else { return nil }
      return MountStatus(
        name: name, state: report.state.rawValue, detail: report.detail, pid: report.pid,
        uptimeSeconds: report.readySince.map { Double((now - $0).nanosecondsClamped) / 1e9 },
        restarts: report.restarts, mountpoint: report.mountpoint, required: report.required,
        stoppedByOperator: report.stoppedByOperator, lastError: report.lastFailure?.description,
        lastErrorOutput: report.lastFailure?.outputTail ?? [], workerStatus: report.workerStatus,
        hangs: report.hangs, resumes: report.resumes,
        lastResumeGapMilliseconds: report.lastResumeGap.map {
          Double($0.nanosecondsClamped) / 1e6
        }, holdsConnection: report.holdsConnection)
    }
  }
}
