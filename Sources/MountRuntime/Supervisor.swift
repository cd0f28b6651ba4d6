import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountCore

/// The imperative shell around `SupervisorCore`: one event loop that turns pidfds, worker
/// sockets and pipes, signals, the timer and mountinfo changes into events, and carries out the
/// effects the core returns.
public final class Supervisor {
  private var core: SupervisorCore
  private var configuration: Configuration
  private let loadConfiguration: () throws -> Configuration
  private let loop: EventLoop
  private let timer: DeadlineTimer
  private let signals: Int32
  private let mountinfo: Int32
  private var table: MountTable
  private let notifier = ServiceNotifier()
  private var watchdog: Watchdog?
  private let logger: Logger
  private var workers: [String: WorkerProcess] = [:]
  private var outputs: [String: OutputLog] = [:]
  private var probes: [String: MountProbe] = [:]
  private var pendingEvents: [(String, MountMachine.Event)] = []
  /// One buffer for every read of worker output and messages: the loop reads one fd at a time.
  private var readBuffer = [UInt8](repeating: 0, count: 65536)
  private var exitCode: Int32?
  /// The control socket, `mountctl`'s way in; it also runs the reloads.
  private var control: ControlServer?
  private let searchPath: [String]
  private let inheritedEnvironment: [String: String]

  /// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them. Call it first thing in
  /// `main`, before any thread exists, so that every later thread inherits the mask.
  public static func captureSignals() throws -> Int32 {
    let fd = [SIGTERM, SIGINT, SIGHUP].withUnsafeBufferPointer {
      mountsup_signalfd($0.baseAddress, $0.count)
    }
    guard fd >= 0 else { throw RuntimeError("signalfd") }
    return fd
  }

  /// - Parameters:
  ///   - signalFD: from `captureSignals()`.
  ///   - reload: reads and validates the configuration again, for SIGHUP.
  public init(
    configuration: Configuration, signalFD: Int32, logger: Logger,
    reload: @escaping () throws -> Configuration
  ) throws {
    self.configuration = configuration
    self.loadConfiguration = reload
    self.logger = logger
    core = SupervisorCore(specs: configuration.mounts)
    loop = try EventLoop()
    timer = try DeadlineTimer()
    signals = signalFD
    mountinfo = open(MountTable.path, O_RDONLY | O_CLOEXEC)
    guard mountinfo >= 0 else { throw RuntimeError("open \(MountTable.path)") }
    table = MountTable.read(from: mountinfo)
    var environment: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
      let text = String(cString: entry)
      if let equals = text.firstIndex(of: "=") {
        environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
      }
      pointer += 1
    }
    inheritedEnvironment = environment
    // Workers are found on PATH, then beside this executable (where mountsup-mirror is built).
    let path =
      environment["PATH"].map { $0.split(separator: ":").map(String.init) }
      ?? LaunchPlan.defaultSearchPath
    searchPath = path + [Self.ownDirectory()].compactMap { $0 }
  }

  /// Runs until every mount is stopped after SIGTERM/SIGINT, or the service failed; returns the
  /// exit code (0 after a clean stop, 1 when a required mount could not start).
  public func run() throws -> Int32 {
    try loop.add(signals) { [unowned self] _ in handleSignals() }
    try loop.add(timer.fd) { [unowned self] _ in
      timer.acknowledge()
      control?.timerFired(now: .now())
      execute(core.timerFired(now: .now()))
    }
    try loop.add(mountinfo, events: EventLoop.priority) { [unowned self] _ in
      refreshMountTable()
      flushEvents()
    }
    control = try ControlServer(host: self, loop: loop, logger: logger)
    watchdog = try Watchdog.start(on: loop, notifier: notifier) { [unowned self] in
      core.serviceFailure == nil
    }
    if let watchdog {
      logger.info(
        "watchdog: WATCHDOG=1 every \(watchdog.timeout / 2) (WatchdogSec=\(watchdog.timeout))")
    }
    logger.info(
      "starting \(configuration.mounts.count) mounts from \(configuration.files.joined(separator: ", "))"
    )
    execute(core.begin(now: .now()))
    while exitCode == nil { loop.runOnce() }
    control?.close()
    return exitCode!
  }

  // MARK: Events in

  private func handleSignals() {
    while case let signal = mountsup_read_signal(signals), signal > 0 {
      switch signal {
      case SIGHUP:
        control?.reloads.request()
      default:
        if core.shuttingDown {
          logger.notice("already stopping; waiting for workers to exit")
          continue
        }
        logger.notice("received \(signal == SIGINT ? "SIGINT" : "SIGTERM"); stopping all mounts")
        execute(core.shutdown(now: .now()))
        notifier.stopping(status: core.statusLine)
      }
    }
  }

  /// Re-reads the mount table and tells each machine whether its worker's mount appeared or
  /// vanished. Every read goes through here: reading the watched fd consumes its POLLPRI, so a
  /// read that skipped the comparison could hide another worker's new mount.
  private func refreshMountTable() {
    table = MountTable.read(from: mountinfo)
    for (name, worker) in workers {
      let own = worker.ownMount(in: table)
      if let own, worker.mountID == nil {
        worker.mountID = own.id
        deliver(.mountAppeared, to: name)
      } else if own == nil, worker.mountID != nil {
        worker.mountID = nil
        deliver(.mountVanished, to: name)
      }
    }
  }

  private func workerOutputReadable(_ name: String, _ worker: WorkerProcess) {
    while worker.outputFD >= 0 {
      let got = read(worker.outputFD, &readBuffer, readBuffer.count)
      if got > 0 {
        worker.pendingOutput += readBuffer.prefix(got)
        while let newline = worker.pendingOutput.firstIndex(of: UInt8(ascii: "\n")) {
          record(
            line: String(decoding: worker.pendingOutput[..<newline], as: UTF8.self), of: name,
            pid: worker.pid)
          worker.pendingOutput.removeSubrange(...newline)
        }
        if worker.pendingOutput.count > 8192 {
          record(
            line: String(decoding: worker.pendingOutput, as: UTF8.self), of: name, pid: worker.pid)
          worker.pendingOutput.removeAll()
        }
        continue
      }
      if got < 0, errno == EAGAIN || errno == EINTR { return }
      if !worker.pendingOutput.isEmpty {
        record(
          line: String(decoding: worker.pendingOutput, as: UTF8.self), of: name, pid: worker.pid)
        worker.pendingOutput.removeAll()
      }
      loop.remove(worker.outputFD)
      close(worker.outputFD)
      worker.outputFD = -1
    }
  }

  private func record(line: String, of name: String, pid: Int32) {
    outputs[name, default: OutputLog()].append(line)
    logger.info("\(line)", metadata: ["mount": "\(name)", "pid": "\(pid)", "source": "worker"])
    control?.outputAppended(line, of: name)
  }

  private func notifyReadable(_ name: String, _ worker: WorkerProcess) {
    while worker.notifyFD >= 0 {
      let got = recv(worker.notifyFD, &readBuffer, readBuffer.count, Int32(MSG_DONTWAIT))
      if got > 0 {
        let message = WorkerMessage(datagram: readBuffer.prefix(got))
        if message.isEmpty {
          logger.debug("ignored a message without known keys", metadata: ["mount": "\(name)"])
        } else {
          deliver(.message(message), to: name)
        }
        continue
      }
      if got < 0, errno == EAGAIN || errno == EINTR { break }
      loop.remove(worker.notifyFD)
      close(worker.notifyFD)
      worker.notifyFD = -1
    }
  }

  private func workerExited(_ name: String, _ worker: WorkerProcess) {
    var code: Int32 = 0
    var signal: Int32 = 0
    guard mountsup_reap(worker.pidfd, &code, &signal) == 1 else { return }
    // A mount unmounted from outside is gone before its worker exits: the loop may see the exit
    // first, but the machine must learn of the vanished mount first, so that an operator's
    // `umount` is always a failure handled by the restart policy, never a clean exit.
    refreshMountTable()
    if code == 0, signal == 0, worker.mountID != nil {
      // A FUSE program that forks into the background mounts, then its parent exits 0.
      logger(for: name).warning(
        """
        the worker exited with status 0 while its FUSE mount at \(worker.mountpoint) stayed: the program went \
        to the background; run it in the foreground (most FUSE programs: -f; rclone: without --daemon)
        """)
    }
    // What the worker said and printed last belongs to the reason, so read it before the exit.
    notifyReadable(name, worker)
    workerOutputReadable(name, worker)
    if worker.notifyFD >= 0 {
      loop.remove(worker.notifyFD)
      close(worker.notifyFD)
    }
    if let sdNotify = worker.sdNotify {
      for datagram in sdNotify.receive(fromSessionOf: worker.pid) {
        deliver(.message(WorkerMessage(datagram: datagram)), to: name)
      }
      loop.remove(sdNotify.fd)
      close(sdNotify.fd)
    }
    loop.remove(worker.pidfd)
    close(worker.pidfd)
    // Helpers left in its process group (sshfs's ssh) go with it.
    kill(-worker.pid, SIGKILL)
    workers[name] = nil
    lastBaselines[name] = worker.baseline
    if worker.outputFD >= 0 { ownOrphanedOutput(worker, of: name) }
    let status: ExitStatus = signal != 0 ? .signaled(signal) : .exited(code)
    deliver(.exited(status, outputTail: outputs[name]?.tail(20) ?? []), to: name)
    flushEvents()
  }

  /// A grandchild may still hold the output pipe; keep reading it until EOF.
  private func ownOrphanedOutput(_ worker: WorkerProcess, of name: String) {
    let fd = worker.outputFD
    loop.remove(fd)
    try? loop.add(fd) { [unowned self] _ in workerOutputReadable(name, worker) }
  }

  // MARK: Effects out

  private func deliver(_ event: MountMachine.Event, to name: String) {
    pendingEvents.append((name, event))
  }

  private func flushEvents() {
    while !pendingEvents.isEmpty {
      let (name, event) = pendingEvents.removeFirst()
      execute(core.handle(event, for: name, now: .now()))
    }
    afterStep()
  }

  private func execute(_ effects: [SupervisorCore.Effect]) {
    for effect in effects {
      switch effect {
      case .mount(let name, let mountEffect):
        perform(mountEffect, for: name)
      case .announceReady:
        logger.notice("ready: \(core.statusLine)")
        notifier.ready(status: core.statusLine)
      case .announceFailure(let name, let failure):
        logger.error(
          "cannot start: required mount \(name) failed: \(failure)", metadata: ["mount": "\(name)"])
        for line in failure.outputTail.suffix(10) {
          logger.error("  | \(line)", metadata: ["mount": "\(name)"])
        }
        notifier.failure(status: core.statusLine, errno: failure.errno)
      case .exit(let code):
        logger.notice(
          code == 0 ? "all mounts stopped" : "exiting with status \(code): \(core.statusLine)")
        exitCode = code
      }
    }
    flushEvents()
  }

  private func afterStep() {
    control?.stateChanged()
    rearmTimer()
    notifier.status(serviceStatus)
    // While required mounts are legitimately starting, ask the service manager for the time
    // their start timeouts allow, plus a margin for the cleanup after a failure.
    if let deadline = core.startupDeadline {
      let now = MonotonicInstant.now()
      let remaining = deadline > now ? (deadline - now).nanosecondsClamped / 1000 : 0
      notifier.extendTimeout(microseconds: UInt64(remaining) + 5_000_000)
    }
  }

  private func perform(_ effect: MountMachine.Effect, for name: String) {
    let mountLogger = logger(for: name)
    switch effect {
    case .inspectMountpoint(let attempt, let mountpoint):
      inspect(mountpoint, for: name, attempt: attempt)
    case .detachStaleMount(let attempt, let mountpoint):
      if let problem = Unmounting.detach(mountpoint, asRoot: geteuid() == 0) {
        deliver(
          .prepareFailed(
            attempt: attempt,
            Failure(summary: "cannot clear the FUSE mount at \(mountpoint): \(problem)")),
          to: name)
      }
    case .endLeftoverWorkers(let pids):
      for pid in pids {
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
      }
    case .createMountpoint(let attempt, let mountpoint, let user):
      if let problem = makeMountpoint(mountpoint, user: user) {
        deliver(.prepareFailed(attempt: attempt, Failure(summary: problem)), to: name)
      } else {
        deliver(.prepared(attempt: attempt), to: name)
      }
    case .spawn(let attempt, let spec):
      spawn(name, attempt: attempt, spec: spec)
    case .startProbe(let attempt, let mountpoint, let probePath):
      guard let worker = workers[name] else { return }
      let owner = table.entries.first { $0.id == worker.mountID }?.owner
      probes[name] = MountProbe(
        mountpoint: mountpoint, probePath: probePath, owner: owner, loop: loop
      ) {
        [unowned self] failure in
        deliver(
          failure.map { .probeFailed(attempt: attempt, $0) } ?? .probeAnswered(attempt: attempt),
          to: name)
        flushEvents()
      }
    case .cancelProbe:
      probes.removeValue(forKey: name)?.cancel()
    case .unmount:
      guard let worker = workers[name] else { return }
      if let problem = Unmounting.unmount(worker.mountpoint, asRoot: worker.unmountsAsRoot) {
        mountLogger.warning("\(problem)")
      }
    case .signal(let signal):
      workers[name]?.signal(signal)
    case .detachMount:
      detachOwnMount(name)
    case .log(let level, let message):
      mountLogger.log(level: level.loggerLevel, "\(message)")
    }
  }

  /// Gathers what is at the mountpoint for the core to decide on: the mount table, workers of
  /// an earlier run (from /proc, without touching the mount), and off the loop the owner's
  /// `statfs`, which a hung server would block.
  private func inspect(_ mountpoint: String, for name: String, attempt: Int) {
    refreshMountTable()
    guard let top = table.mounts(at: mountpoint).last else {
      deliver(.mountpointInspected(attempt: attempt, .empty), to: name)
      return
    }
    guard top.isFUSE else {
      deliver(
        .mountpointInspected(attempt: attempt, .other(fsType: top.fsType, source: top.source)),
        to: name)
      return
    }
    let leftovers = LeftoverWorkers.serving(mountpoint)
    guard leftovers.isEmpty else {
      deliver(
        .mountpointInspected(
          attempt: attempt,
          .fuse(fsType: top.fsType, source: top.source, server: .leftover(pids: leftovers))),
        to: name)
      return
    }
    let owner = top.owner
    BlockingCall.start(
      on: loop, work: { Self.statfsError(mountpoint, as: owner) },
      completion: { [unowned self] code in
        let server: FUSEServer =
          switch code {
          case 0: .foreign
          case ENOTCONN, ECONNABORTED: .gone(reason: errorText(code))
          default: .failing(reason: errorText(code))
          }
        deliver(
          .mountpointInspected(
            attempt: attempt, .fuse(fsType: top.fsType, source: top.source, server: server)),
          to: name)
        flushEvents()
      })
  }

  /// Runs on a thread of its own, as the mount's owner: for anyone else the kernel answers the
  /// `statfs` of a mount without `allow_other` itself, and a dead mount would look alive.
  private static func statfsError(_ path: String, as owner: MountOwner?) -> Int32 {
    if let code = owner?.assumeOnThisThread(), code != 0 { return code }
    var fs = statfs()
    return statfs(path, &fs) == 0 ? 0 : errno
  }

  /// `mkdir -p`; a directory it creates for a non-root worker belongs to that worker's user.
  private func makeMountpoint(_ mountpoint: String, user: String?) -> String? {
    var path = ""
    for component in mountpoint.split(separator: "/") {
      path += "/" + component
      if mkdir(path, 0o755) == 0 {
        if let user, let entry = getpwnam(user) {
          chown(path, entry.pointee.pw_uid, entry.pointee.pw_gid)
        }
      } else if errno != EEXIST {
        return "cannot create the mountpoint \(path): \(errorText(errno))"
      }
    }
    var info = stat()
    guard stat(mountpoint, &info) == 0 else {
      return "cannot use the mountpoint \(mountpoint): \(errorText(errno))"
    }
    guard info.st_mode & S_IFMT == S_IFDIR else {
      return "the mountpoint \(mountpoint) is not a directory"
    }
    return nil
  }

  private func spawn(_ name: String, attempt: Int, spec: MountSpec) {
    do {
      let sdNotify =
        try spec.readiness == .notify ? WorkerNotifySocket(mount: name, attempt: attempt) : nil
      let plan: LaunchPlan
      do {
        plan = try LaunchPlan(
          spec: spec, inherited: inheritedEnvironment, searchPath: searchPath,
          notifySocket: sdNotify?.address)
      } catch {
        if let sdNotify { close(sdNotify.fd) }
        throw error
      }
      var pair: [Int32] = [-1, -1]
      guard
        socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair)
          == 0
      else {
        throw Failure(summary: "socketpair: \(errorText(errno))")
      }
      var pipe: [Int32] = [-1, -1]
      guard mountsup_pipe(&pipe) == 0 else {
        close(pair[0])
        close(pair[1])
        throw Failure(summary: "pipe: \(errorText(errno))")
      }
      refreshMountTable()
      let baseline = Set(table.fuseMounts(at: spec.mountpoint).map(\.id))
      let launched: (pid: Int32, pidfd: Int32)
      do {
        launched = try plan.launch(notify: pair[1], output: pipe[1])
      } catch {
        for fd in [pair[0], pair[1], pipe[0], pipe[1]] { close(fd) }
        if let sdNotify { close(sdNotify.fd) }
        throw error
      }
      close(pair[1])
      close(pipe[1])
      mountsup_set_nonblocking(pipe[0])
      let worker = WorkerProcess(
        pid: launched.pid, pidfd: launched.pidfd, notifyFD: pair[0], outputFD: pipe[0],
        mountpoint: spec.mountpoint, baseline: baseline, unmountsAsRoot: geteuid() == 0)
      worker.sdNotify = sdNotify
      workers[name] = worker
      if let sdNotify {
        try loop.add(sdNotify.fd) { [unowned self] _ in
          for datagram in sdNotify.receive(fromSessionOf: worker.pid) {
            deliver(.message(WorkerMessage(datagram: datagram)), to: name)
          }
          flushEvents()
        }
      }
      try loop.add(worker.pidfd) { [unowned self] _ in workerExited(name, worker) }
      try loop.add(worker.notifyFD) { [unowned self] _ in
        notifyReadable(name, worker)
        flushEvents()
      }
      try loop.add(worker.outputFD) { [unowned self] _ in workerOutputReadable(name, worker) }
      logger(for: name).info(
        "worker started, pid \(launched.pid)", metadata: ["pid": "\(launched.pid)"])
      deliver(.spawned(pid: launched.pid), to: name)
    } catch let failure as Failure {
      deliver(.spawnFailed(failure), to: name)
    } catch {
      deliver(.spawnFailed(Failure(summary: "\(error)")), to: name)
    }
  }

  /// Lazily detaches a FUSE mount the (now exiting or dead) worker left at its mountpoint. Mounts
  /// that were there before it started are not its own and stay.
  private func detachOwnMount(_ name: String) {
    refreshMountTable()
    let current = table
    let mountpoint = workers[name]?.mountpoint ?? core.machines[name]?.spec.mountpoint
    guard let mountpoint else { return }
    let baseline = workers[name]?.baseline ?? lastBaselines[name] ?? []
    for entry in current.fuseMounts(at: mountpoint).reversed() where !baseline.contains(entry.id) {
      if let problem = Unmounting.detach(mountpoint, asRoot: geteuid() == 0) {
        logger.warning("\(problem)", metadata: ["mount": "\(name)"])
        return
      }
      logger.info(
        "detached the worker's FUSE mount at \(mountpoint) (\(entry.fsType))",
        metadata: ["mount": "\(name)"])
    }
  }

  /// The baseline of a mount's last worker, for the detach that follows its exit.
  private var lastBaselines: [String: Set<Int>] = [:]

  private func logger(for name: String) -> Logger {
    var mountLogger = logger
    mountLogger[metadataKey: "mount"] = "\(name)"
    return mountLogger
  }

  private static func ownDirectory() -> String? {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
    let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard length > 0 else { return nil }
    let path = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return path.split(separator: "/").dropLast().reduce("") { $0 + "/" + $1 }
  }
}

extension LogLevel {
  var loggerLevel: Logger.Level {
    switch self {
    case .debug: .debug
    case .info: .info
    case .notice: .notice
    case .warning: .warning
    case .error: .error
    }
  }
}

// MARK: Control socket and reloads

extension Supervisor: ControlHost {
  var supervisorCore: SupervisorCore { core }
  var currentConfiguration: Configuration { configuration }
  var serviceNotifier: ServiceNotifier { notifier }

  var serviceStatus: String {
    guard let error = control?.reloads.lastError else { return core.statusLine }
    return "\(core.statusLine); last reload failed: \(error)"
  }

  func outputLines(of name: String) -> [String] { outputs[name]?.lines ?? [] }

  func operate(_ action: OperatorAction, on name: String) {
    switch action {
    case .start: execute(core.operatorStart(name, now: .now()))
    case .stop: execute(core.operatorStop(name, now: .now()))
    case .restart: execute(core.operatorRestart(name, now: .now()))
    }
  }

  func applyConfiguration() throws -> SupervisorCore.ReloadSummary {
    let next = try loadConfiguration()
    if next.supervisor.controlSocket != configuration.supervisor.controlSocket {
      logger.warning(
        "control_socket changed to \(next.supervisor.controlSocket); it takes effect when mountsupd restarts"
      )
    }
    let (summary, effects) = core.apply(specs: next.mounts, now: .now())
    configuration = next
    logger.notice(
      "reloaded: added \(summary.added), removed \(summary.removed), changed \(summary.changed), unchanged \(summary.unchanged.count)"
    )
    execute(effects)
    return summary
  }

  /// The one timer serves the mounts' deadlines and the control clients'.
  func rearmTimer() {
    timer.arm(at: [core.nextDeadline, control?.nextDeadline].compactMap { $0 }.min()?.nanoseconds)
  }
}
