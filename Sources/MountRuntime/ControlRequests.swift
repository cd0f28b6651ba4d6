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

    case .start, .stop, .restart:
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
      let action: OperatorAction =
        request.command == .start ? .start : request.command == .stop ? .stop : .restart
      logger.notice(
        "\(client.peer.description): \(request.command.rawValue) \(names.joined(separator: " "))")
      for name in names { host.operate(action, on: name) }
      if request.noBlock {
        respond(client, ControlResponse(mounts: statuses(names)))
      } else {
        client.pending = .operation(action, names)
        evaluate(client)
      }

    case .reload:
      logger.notice("\(client.peer.description): reload")
      client.pending = .reload
      reloads.request { [weak self, weak client] outcome in
        guard let self, let client else { return }
        respond(client, response(to: outcome))
      }

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
      if request.follow {
        client.pending = .follow(names[0])
        send(ControlResponse(lines: lines, more: true), to: client)
      } else {
        respond(client, ControlResponse(lines: lines))
      }

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
      client.pending = .waitReady(names, deadline: timeout.map { .now() + $0 }, timeout: timeout)
      evaluate(client)
    }
  }

  /// Answers the client's waiting request if the mounts have got where it waits for.
  func evaluate(_ client: Client) {
    switch client.pending {
    case .operation(let action, let names):
      var failures: [String] = []
      for name in names {
        switch outcome(of: action, for: name) {
        case nil: return
        case .reached: break
        case .failed(let reason): failures.append("\(name): \(reason)")
        }
      }
      respond(
        client,
        failures.isEmpty
          ? ControlResponse(mounts: statuses(names))
          : .failure(.failed, failures.joined(separator: "; "), mounts: statuses(names)))
    case .waitReady(let names, _, _):
      var failures: [String] = []
      var waiting = false
      for name in names {
        switch readiness(of: name, failingOnBackoff: false) {
        case nil: waiting = true
        case .reached: break
        case .failed(let reason): failures.append("\(name): \(reason)")
        }
      }
      if !failures.isEmpty {
        respond(
          client, .failure(.failed, failures.joined(separator: "; "), mounts: statuses(names)))
      } else if !waiting {
        respond(client, ControlResponse(mounts: statuses(names)))
      }
    case .reload, .follow, nil:
      return
    }
  }

  private enum Outcome {
    case reached
    case failed(String)
  }

  private func outcome(of action: OperatorAction, for name: String) -> Outcome? {
    guard action != .stop else {
      return (host.supervisorCore.machines[name]?.isSettled ?? true) ? .reached : nil
    }
    // A start that fails and is retried is reported at its first failure, with the reason.
    return readiness(of: name, failingOnBackoff: true)
  }

  /// Whether a mount is ready, can no longer become ready without an operator, or may still.
  private func readiness(of name: String, failingOnBackoff: Bool) -> Outcome? {
    let core = host.supervisorCore
    guard let machine = core.machines[name] else {
      return .failed("removed from the configuration")
    }
    switch machine.phase {
    case .ready:
      return .reached
    case .failed(let failure):
      return .failed("failed: \(failure)")
    case .exited(let status):
      return .failed(
        "the worker \(status) and is not restarted (restart = \(machine.spec.restart.rawValue))")
    case .backoff where failingOnBackoff:
      return .failed(core.detail(of: name))
    case .inactive where core.held.contains(name):
      return .failed("stopped by an operator (mountctl start \(name))")
    case .inactive:
      if let parent = core.parent(of: name), let parentMachine = core.machines[parent],
        parentMachine.isFailed || parentMachine.phase.isExited
      {
        return .failed("its parent mount \(parent) is \(core.detail(of: parent))")
      }
    case .preparing, .starting, .backoff, .stopping:
      break
    }
    return core.shuttingDown ? .failed("mountsupd is stopping every mount") : nil
  }

  private func response(to outcome: ReloadQueue.Outcome) -> ControlResponse {
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
        + "status_group \"\(statusGroup)\", which may read status and logs and wait for readiness"
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
      ready: core.readyAnnounced, status: host.serviceStatus, reloading: reloads.isReloading,
      shuttingDown: core.shuttingDown, configFiles: host.currentConfiguration.files, pid: getpid())
  }

  /// The status of each named mount that is still known, in the order given.
  func statuses(_ names: [String]) -> [MountStatus] {
    let core = host.supervisorCore
    let now = MonotonicInstant.now()
    return names.compactMap { name in
      guard let machine = core.machines[name] else { return nil }
      var uptime: Double?
      if case .ready(_, let since) = machine.phase {
        uptime = Double((now - since).nanosecondsClamped) / 1e9
      }
      return MountStatus(
        name: name, state: machine.stateName, detail: core.detail(of: name), pid: machine.pid,
        uptimeSeconds: uptime, restarts: machine.restarts, mountpoint: machine.spec.mountpoint,
        required: machine.spec.required, stoppedByOperator: core.held.contains(name),
        lastError: machine.lastFailure?.description,
        lastErrorOutput: machine.lastFailure?.outputTail ?? [],
        workerStatus: machine.workerStatus)
    }
  }
}

extension MountMachine.Phase {
  fileprivate var isExited: Bool {
    if case .exited = self { return true }
    return false
  }
}
