import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountControl
import MountCore

/// An upgrade under way: the new binary is asked (`--can-resume FORMAT`) whether it can take
/// over, then, between two loop turns, the state is handed over and the binary exec'd in place.
final class UpgradeAttempt {
  /// How long the new binary may take to answer `--can-resume`.
  static let checkTimeout: Duration = .seconds(10)

  let binary: String
  /// The `mountctl upgrade` that asked; nil for SIGUSR2.
  let requester: ControlServer.Client?
  let requestedAt: MonotonicInstant
  /// By when the check must have answered.
  let deadline: MonotonicInstant
  let checkPID: pid_t
  let checkPidfd: Descriptor
  let checkOutput: Descriptor
  /// What the new binary said it is, once it said it can take over.
  var newIdentity: String?

  var isChecked: Bool { newIdentity != nil }

  init(
    binary: String, requester: ControlServer.Client?, requestedAt: MonotonicInstant,
    check: (pid: pid_t, pidfd: Descriptor, output: Descriptor)
  ) {
    self.binary = binary
    self.requester = requester
    self.requestedAt = requestedAt
    deadline = requestedAt + Self.checkTimeout
    checkPID = check.pid
    checkPidfd = check.pidfd
    checkOutput = check.output
  }
}

extension Supervisor {
  /// The descriptor of the state an upgrade handed over, if this process is the new binary of
  /// one; the variable is removed, so that no worker inherits it.
  public static func upgradeStateDescriptor() -> Int32? {
    guard let text = getenv(UpgradeState.environmentKey), let fd = Int32(String(cString: text))
    else { return nil }
    unsetenv(UpgradeState.environmentKey)
    return fd
  }

  /// Whether this build can take over a supervisor whose state has this format: the question
  /// `mountsupd --can-resume FORMAT` answers for the old binary before an upgrade.
  public static func canResume(format: Int) -> Bool {
    UpgradeState.readableFormats.contains(format)
  }

  /// The state formats this build takes over from ("formats 1 and 2"), for messages.
  public static var upgradeFormats: String { UpgradeState.readableFormatsText }

  /// The file this process was started from: what `mountctl upgrade` execs by default.
  static func currentExecutablePath() -> String {
    let path = symlinkTarget("/proc/self/exe") ?? ""
    // A binary replaced on disk (`make install`) shows as "PATH (deleted)": the path is the point.
    return path.hasSuffix(" (deleted)") ? String(path.dropLast(" (deleted)".count)) : path
  }

  /// `mountctl upgrade` or SIGUSR2: checks that `binary` (default: the file this one was started
  /// from) can take over, then execs it at the end of the loop turn. Anything that stops it
  /// leaves this daemon as it was and says why.
  func requestUpgrade(binary requested: String?, requester: ControlServer.Client?) {
    let binary = requested ?? executablePath
    func refuse(_ reason: String) {
      logger.error("upgrade refused: \(reason)")
      if let requester {
        control?.respond(requester, .failure(.failed, "upgrade refused: \(reason)"))
      }
    }
    guard upgrade == nil else { return refuse("an upgrade is already under way") }
    guard !core.shuttingDown else { return refuse("mountsupd is stopping every mount") }
    var info = stat()
    guard stat(binary, &info) == 0 else {
      return refuse("\(binary): \(errorText(errno)); nothing changed")
    }
    guard info.st_mode & S_IFMT == S_IFREG, access(binary, X_OK) == 0 else {
      return refuse("\(binary) is not an executable file; nothing changed")
    }
    do throws(RuntimeError) {
      let (output, theirOutput) = try Descriptor.pipe()
      try output.setNonBlocking()
      var plan = try LaunchPlan(
        spec: MountSpec(name: "upgrade", mountpoint: "/", command: [binary]), executable: binary,
        inherited: inheritedEnvironment)
      plan.arguments = [binary, "--can-resume", String(UpgradeState.format)]
      plan.environment = []
      let (pid, pidfd) = try plan.launch(notify: nil, output: theirOutput, slots: spawnSlots)
      try loop.add(pidfd, as: .upgradeCheck)
      logger.notice("upgrade: asking \(binary) whether it can take over")
      upgrade = UpgradeAttempt(
        binary: binary, requester: requester, requestedAt: .now(),
        check: (pid, pidfd, output))
    } catch {
      refuse("cannot run \(binary) --can-resume: \(error); nothing changed")
    }
  }

  /// The new binary answered `--can-resume`: exit status 0 and its identity, or a refusal.
  func readUpgradeCheck() {
    guard let attempt = upgrade else { return }
    var code: Int32 = 0
    var signal: Int32 = 0
    guard mountsup_reap(attempt.checkPidfd.raw, &code, &signal) == 1 else { return }
    loop.remove(attempt.checkPidfd)
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while let got = buffer.withUnsafeMutableBytes({ try? attempt.checkOutput.read(into: $0) })
      ?? nil,
      got > 0, bytes.count < 1 << 16
    {
      bytes += buffer.prefix(got)
    }
    let said = String(decoding: bytes, as: UTF8.self).trimmingWhitespace
    guard code == 0, signal == 0, !said.isEmpty else {
      let status = signal != 0 ? "was killed by signal \(signal)" : "exited with status \(code)"
      let words = said.isEmpty ? "" : ": \(said.split(separator: "\n").last ?? "")"
      return failUpgrade(
        "\(attempt.binary) --can-resume \(UpgradeState.format) \(status)\(words); nothing changed")
    }
    attempt.newIdentity = String(said.split(separator: "\n").last ?? "")
    logger.debug(
      "upgrade: \(attempt.binary) can take over (\(Self.elapsed(since: attempt.requestedAt)))")
  }

  /// "12.3 ms since the request", for the debug log of an upgrade's steps.
  static func elapsed(since start: MonotonicInstant) -> String {
    "\(milliseconds(since: start)) ms since the request"
  }

  /// Milliseconds from `start` to now, to a tenth.
  static func milliseconds(since start: MonotonicInstant) -> Double {
    (Double((MonotonicInstant.now() - start).nanosecondsClamped) / 1e5).rounded() / 10
  }

  /// The check did not answer in time.
  func upgradeTimerFired(now: MonotonicInstant) {
    guard let attempt = upgrade, !attempt.isChecked, attempt.deadline <= now else { return }
    mountsup_pidfd_signal(attempt.checkPidfd.raw, SIGKILL)
    _ = retryingOnInterrupt { waitid(P_PIDFD, id_t(attempt.checkPidfd.raw), nil, WEXITED) }
    loop.remove(attempt.checkPidfd)
    failUpgrade(
      "\(attempt.binary) did not answer --can-resume within \(formatDuration(UpgradeAttempt.checkTimeout)); nothing changed"
    )
  }

  /// Ends the attempt; the daemon goes on as before.
  func failUpgrade(_ reason: String) {
    let requester = upgrade?.requester
    upgrade = nil
    logger.error("upgrade failed: \(reason)")
    if let requester { control?.respond(requester, .failure(.failed, "upgrade failed: \(reason)")) }
  }

  /// Hands everything over and execs the new binary; returns only if the exec failed, with
  /// the daemon as it was (but for the clients told to retry).
  func performUpgrade() {
    guard let attempt = upgrade, let identity = attempt.newIdentity, let control else { return }
    guard !core.shuttingDown else { return failUpgrade("mountsupd began stopping every mount") }
    let carried = control.prepareForUpgrade(keeping: attempt.requester)
    let state = captureUpgradeState(control: carried, requestedAt: attempt.requestedAt)
    let stateFile: Descriptor
    do throws(RuntimeError) {
      stateFile = try state.write()
    } catch {
      return failUpgrade("\(error)")
    }
    logger.debug(
      "upgrade: state of \(counted(workers.count, "worker")) written (\(lseek(stateFile.raw, 0, SEEK_END) >> 10) KiB; \(Self.elapsed(since: attempt.requestedAt)))"
    )
    let descriptors = state.descriptors + [stateFile.raw]
    for fd in descriptors { mountsup_set_cloexec(fd, 0) }
    setenv(UpgradeState.environmentKey, String(stateFile.raw), 1)
    logger.notice(
      "upgrading from \(MountSupervisorRelease.identity) to \(identity) (\(attempt.binary)), \(counted(workers.count, "worker")) kept"
    )
    notifier.flushBeforeExit()
    let arguments = [attempt.binary] + CommandLine.arguments.dropFirst()
    let argv = arguments.map { strdup($0) } + [nil]
    execve(attempt.binary, argv, environ)
    let code = errno
    for pointer in argv { free(pointer) }
    unsetenv(UpgradeState.environmentKey)
    for fd in descriptors { mountsup_set_cloexec(fd, 1) }
    failUpgrade("exec of \(attempt.binary) failed: \(errorText(code)); this binary goes on")
  }

  /// Everything the new binary needs, with the descriptors it names.
  func captureUpgradeState(control: UpgradeState.ControlRecord, requestedAt: MonotonicInstant)
    -> UpgradeState
  {
    func record(_ worker: Worker) -> UpgradeState.WorkerRecord {
      UpgradeState.WorkerRecord(
        id: worker.id, mount: worker.mount, pid: worker.pid, pidfd: worker.pidfd.raw,
        messages: worker.messages?.raw, output: worker.output?.raw,
        notifySocket: worker.notifySocket?.fd.raw, notifyAddress: worker.notifySocket?.address,
        mountpoint: worker.mountpoint, baseline: worker.baseline, mountID: worker.mountID,
        lines: worker.lines)
    }
    return UpgradeState(
      fromVersion: MountSupervisorRelease.identity, requestedAt: requestedAt,
      configuration: .init(configuration, core: core), core: core.snapshot,
      workers: workers.values.sorted { $0.id < $1.id }.map(record),
      orphanedOutputs: orphanedOutputs.values.map(record),
      lastMountSites: lastMountSite.mapValues {
        .init(mountpoint: $0.mountpoint, baseline: $0.baseline)
      },
      outputs: outputs, nextWorkerID: nextWorkerID, control: control, reload: reloads.record,
      heldConnections: heldConnections.map { name, held in
        UpgradeState.HeldRecord(
          mount: name, fuse: held.fuse.raw, state: held.state?.raw, initRequest: held.initRequest,
          mountID: held.mountID)
      }, startedAt: startedAt, executablePath: executablePath, upgrades: upgrades,
      hangCheckUnavailable: hangCheckUnavailable,
      saidKernelCannotResend: saidKernelCannotResend,
      mountEvents: table.mechanism == .fanotify ? table.fd : nil)
  }

  /// Takes over from the binary an upgrade replaced: its workers with their descriptors, their
  /// output, and the work that was in flight off the loop, which did not survive the exec.
  func resume(from state: UpgradeState) {
    logger.debug("upgrade: supervisor made (\(Self.elapsed(since: state.requestedAt)))")
    func adopt(_ record: UpgradeState.WorkerRecord) -> Worker {
      let descriptor = { (fd: Int32?) -> Descriptor? in
        guard let fd else { return nil }
        mountsup_set_cloexec(fd, 1)
        return Descriptor(fd)
      }
      let worker = Worker(
        id: record.id, mount: record.mount, pid: record.pid, pidfd: descriptor(record.pidfd)!,
        messages: descriptor(record.messages), output: descriptor(record.output),
        mountpoint: record.mountpoint, baseline: record.baseline)
      worker.mountID = record.mountID
      worker.lines = record.lines
      if let fd = descriptor(record.notifySocket), let address = record.notifyAddress {
        worker.notifySocket = WorkerNotifySocket(fd: fd, address: address)
      }
      return worker
    }
    for record in state.workers {
      let worker = adopt(record)
      do {
        try loop.add(worker.pidfd, as: .workerExit(worker.id))
        if let messages = worker.messages { try loop.add(messages, as: .workerMessages(worker.id)) }
        if let output = worker.output { try loop.add(output, as: .workerOutput(worker.id)) }
        if let socket = worker.notifySocket {
          try loop.add(socket.fd, as: .workerNotifySocket(worker.id))
        }
      } catch {
        logger.error(
          "cannot watch worker \(worker.pid) of \(worker.mount) after the upgrade: \(error)")
      }
      workers[worker.id] = worker
      workerOf[worker.mount] = worker.id
      workerAt[worker.mountpoint] = worker.id
    }
    for record in state.orphanedOutputs {
      let worker = adopt(record)
      guard let output = worker.output, (try? loop.add(output, as: .workerOutput(worker.id))) != nil
      else { continue }
      orphanedOutputs[worker.id] = worker
    }
    for record in state.heldConnections {
      for fd in [record.fuse] + [record.state].compactMap({ $0 }) { mountsup_set_cloexec(fd, 1) }
      heldConnections[record.mount] = HeldConnection(
        fuse: Descriptor(record.fuse), state: record.state.map(Descriptor.init),
        initRequest: record.initRequest, mountID: record.mountID)
    }
    saidKernelCannotResend = state.saidKernelCannotResend
    lastMountSite = state.lastMountSites.mapValues { ($0.mountpoint, $0.baseline) }
    outputs = state.outputs
    nextWorkerID = state.nextWorkerID
    hangCheckUnavailable = state.hangCheckUnavailable
    reloads.restore(state.reload)
    if state.reload.due { inbox.append(.reload) }
    logger.debug("upgrade: workers adopted (\(Self.elapsed(since: state.requestedAt)))")
    reconcileMountsAfterUpgrade()
    restartWorkOffTheLoop()
    let took = Self.milliseconds(since: state.requestedAt)
    logger.notice(
      "upgraded from \(state.fromVersion) to \(MountSupervisorRelease.identity) in \(took) ms, \(counted(state.workers.count, "mount")) kept"
    )
    let result = UpgradeResult(
      from: state.fromVersion, to: MountSupervisorRelease.identity, milliseconds: took,
      mountsKept: state.workers.count)
    control?.answerUpgradeRequester(state.control.requester, with: ControlResponse(upgrade: result))
    watchdog?.ping()
  }

  /// Mounts that came or went while no binary watched: the table read after the exec is the
  /// truth, compared with what each worker's machine knew.
  func reconcileMountsAfterUpgrade() {
    let now = MonotonicInstant.now()
    for worker in workers.values {
      if let id = worker.mountID, table.entry(id: id) == nil {
        worker.mountID = nil
        inbox.append(.mount(worker.mount, .mountVanished, at: now))
      }
      if worker.mountID == nil,
        let entry = table.fuseMounts(at: worker.mountpoint).last(where: {
          !worker.baseline.contains($0.id)
        })
      {
        worker.mountID = entry.id
        inbox.append(.mount(worker.mount, .mountAppeared, at: now))
      }
    }
  }

  /// Threads do not survive an exec: inspections, probes and hang probes in flight start again,
  /// and spawns that waited for their turn are queued again.
  func restartWorkOffTheLoop() {
    for name in core.order {
      guard let machine = core.machines[name] else { continue }
      switch machine.phase {
      case .preparing(let attempt, _):
        inspect(machine.spec.mountpoint, for: name, attempt: attempt)
      case .starting(let attempt, _, let starting) where starting.pid == nil:
        spawnQueue.append((name, attempt, machine.spec, starting.resuming))
      case .starting(let attempt, _, let starting)
      where starting.probeStarted && !starting.probeAnswered:
        startProbe(
          for: name, attempt: attempt, mountpoint: machine.spec.mountpoint,
          probePath: machine.spec.probePath)
      case .ready:
        if machine.hangCheck != nil {
          startHangProbe(
            for: name, attempt: machine.attempt, mountpoint: machine.spec.mountpoint,
            probePath: machine.spec.probePath)
        }
      default:
        break
      }
    }
  }
}
