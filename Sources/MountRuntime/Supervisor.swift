import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountCore

/// The imperative shell around `SupervisorCore`.
///
/// Every source (pidfds, worker sockets and pipes, signals, the timer, mount-table changes,
/// control clients, answers of work off the loop) only puts events on one queue, each stamped
/// with the instant it was read. One loop turn reads what is ready, feeds the queue to the core
/// in order, and carries out the effects the core returns; an effect that has an answer puts it
/// on the same queue. Nothing calls back into the core from inside an effect, so no call
/// chain's depth follows the number of mounts.
///
/// Each turn serves supervision first (exits, readiness, timers, the mount table), then a
/// bounded share of worker output, control clients and spawns: a worker that prints without
/// pause or a client that pipelines requests cannot hold a restart back.
public final class Supervisor {
  /// Spawns per loop turn: the loop keeps confirming the first mounts while the last ones start.
  static let spawnsPerTurn = 16
  /// Output read from one worker per loop turn.
  static let outputPerTurn = 64 * 1024

  private var core: SupervisorCore
  private var configuration: Configuration
  private let loadConfiguration: () throws -> Configuration
  private let loop: EventLoop
  private let timer: DeadlineTimer
  private let signals: Descriptor
  private let table: MountTable
  private let notifier = ServiceNotifier()
  private var watchdog: Watchdog?
  let logger: Logger
  private var control: ControlServer?
  private let reloads: ReloadCoordinator

  /// What the loop has read and the core has not yet been told, in the order it was read.
  private var inbox: [Input] = []
  private var inboxNext = 0
  private var spawnQueue: [(name: String, attempt: Int, spec: MountSpec)] = []
  private var spawnNext = 0

  private var workers: [WorkerID: Worker] = [:]
  /// The current worker of each mount.
  private var workerOf: [String: WorkerID] = [:]
  /// The worker that mounts at each mountpoint, for mount-table changes.
  private var workerAt: [String: WorkerID] = [:]
  /// Exited workers whose output pipe a grandchild still holds: read until end of file.
  private var orphanedOutputs: [WorkerID: Worker] = [:]
  private var nextWorkerID: WorkerID = 1
  /// Where a mount's last worker mounted and what was there before it, for the detach that
  /// follows its exit.
  private var lastMountSite: [String: (mountpoint: String, baseline: Set<UInt64>)] = [:]
  private var outputs: [String: OutputLog] = [:]
  private var mountLoggers: [String: Logger] = [:]
  private var offLoop: [Int: (work: OffLoopWork, purpose: OffLoopPurpose)] = [:]
  private var nextOffLoopID = 1
  private var readBuffer = [UInt8](repeating: 0, count: Supervisor.outputPerTurn)
  private var exitCode: Int32?

  private let commands: CommandLookup
  private let inheritedEnvironment: [String: String]
  /// The soft descriptor limit the daemon inherited, before raising its own: workers get it.
  private let inheritedDescriptorLimit: rlimit
  private let unmountsAsRoot = geteuid() == 0
  private let spawnSlots: SpawnSlots

  /// Something read by the loop, for the core or the runtime.
  private enum Input {
    case mount(String, MountMachine.Event, at: MonotonicInstant)
    case timer(at: MonotonicInstant)
    case shutdown(signal: Int32, at: MonotonicInstant)
    case operate(OperatorAction, [String], at: MonotonicInstant)
    case reload
  }

  private enum OffLoopPurpose {
    /// The owner's `statfs` of a FUSE mount found at a mountpoint before a start.
    case inspection(mount: String, attempt: Int, fsType: String, source: String)
    case probe(mount: String, attempt: Int, worker: WorkerID)
  }

  /// Blocks SIGTERM, SIGINT and SIGHUP and returns a signalfd for them. Call it first thing in
  /// `main`, before any thread exists, so that every later thread inherits the mask.
  public static func captureSignals() throws -> Int32 {
    let fd = [SIGTERM, SIGINT, SIGHUP].withUnsafeBufferPointer {
      mountsup_signalfd($0.baseAddress, $0.count)
    }
    guard fd >= 0 else { throw RuntimeError(.eventLoop, "signalfd", errno: errno) }
    return fd
  }

  /// - Parameters:
  ///   - signalFD: from `captureSignals()`.
  ///   - reload: reads and validates the configuration again, for SIGHUP and `mountctl reload`.
  public init(
    configuration: Configuration, signalFD: Int32, logger: Logger,
    reload: @escaping () throws -> Configuration
  ) throws {
    self.configuration = configuration
    self.loadConfiguration = reload
    self.logger = logger
    core = SupervisorCore(specs: configuration.mounts)
    // First, while few descriptors are open: what lies below the slots is copied per spawn.
    spawnSlots = try SpawnSlots()
    loop = try EventLoop()
    timer = try DeadlineTimer()
    signals = Descriptor(signalFD)
    table = try MountTable()
    reloads = ReloadCoordinator(logger: logger)
    inheritedDescriptorLimit = Self.raiseDescriptorLimit()
    var environment: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
      let text = String(cString: entry)
      if let equals = text.firstIndex(of: "=") {
        environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
      }
      pointer += 1
    }
    // Workers are found on PATH, then beside this executable (where mountsup-mirror is built);
    // a worker that is a shell wrapper finds them the same way.
    commands = CommandLookup.daemon(path: environment["PATH"])
    environment["PATH"] = commands.searchPath.joined(separator: ":")
    // Inherited by every worker and its helpers: who they belong to (see LeftoverWorkers).
    environment["MOUNTSUP_SUPERVISOR"] = LeftoverWorkers.identity
    inheritedEnvironment = LaunchPlan.workerEnvironment(environment)
  }

  /// Every mount needs three descriptors (socketpair, output pipe, pidfd): a daemon started by
  /// hand with the usual soft limit of 1,024 would run out at about 330 mounts. The soft limit
  /// goes up to the hard one; the inherited one is what workers get.
  private static func raiseDescriptorLimit() -> rlimit {
    var limit = rlimit()
    getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    let inherited = limit
    if limit.rlim_cur < limit.rlim_max {
      limit.rlim_cur = limit.rlim_max
      setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
    return inherited
  }

  /// Runs until every mount is stopped after SIGTERM/SIGINT, or the service failed; returns the
  /// exit code (0 after a clean stop, 1 when a required mount could not start).
  public func run() throws -> Int32 {
    try loop.add(signals, as: .signals)
    try loop.add(timer.fd, as: .timer)
    try loop.add(raw: table.fd, as: .mountTable, events: table.epollEvents)
    logger.info("mount changes: \(table.summary)")
    control = try ControlServer(host: self, loop: loop, logger: logger)
    watchdog = try Watchdog.start(on: loop, notifier: notifier)
    if let watchdog {
      logger.info(
        "watchdog: WATCHDOG=1 every \(watchdog.timeout / 2) (WatchdogSec=\(watchdog.timeout))")
    }
    logger.info("starting \(configuration.summary)")
    execute(core.begin(now: .now()))
    while exitCode == nil {
      turn()
    }
    control?.close()
    return exitCode!
  }

  /// One turn of the loop: wait, read supervision sources, let the core decide, then give the
  /// bounded shares to output, clients and spawns.
  private func turn() {
    drain()
    afterTurn()
    guard exitCode == nil else { return }
    let busy =
      inboxNext < inbox.count || spawnNext < spawnQueue.count || control?.hasBacklog == true
    let ready = loop.wait(timeout: busy ? 0 : -1)
    var later: [(source: Source, events: UInt32)] = []
    for (source, events) in ready {
      switch source {
      case .workerOutput, .controlClient, .controlListener: later.append((source, events))
      default: read(source, events)
      }
    }
    drain()
    for (source, events) in later { read(source, events) }
    control?.serveBacklog()
    spawnSome()
  }

  // MARK: Events in

  private func read(_ source: Source, _ events: UInt32) {
    switch source {
    case .signals:
      readSignals()
    case .timer:
      timer.acknowledge()
      let now = MonotonicInstant.now()
      control?.timerFired(now: now)
      inbox.append(.timer(at: now))
    case .watchdog:
      watchdog?.fired(healthy: core.serviceFailure == nil)
    case .mountTable:
      routeMountChanges()
    case .controlListener:
      control?.acceptClients()
    case .controlClient(let id):
      control?.clientEvent(id, events)
    case .workerExit(let id):
      if let worker = workers[id] { workerExited(worker) }
    case .workerMessages(let id):
      if let worker = workers[id] { readMessages(of: worker) }
    case .workerOutput(let id):
      if let worker = workers[id] ?? orphanedOutputs[id] {
        readOutput(of: worker, budget: Self.outputPerTurn)
      }
    case .workerNotifySocket(let id):
      if let worker = workers[id] { readNotifySocket(of: worker) }
    case .offLoop(let id):
      readOffLoop(id)
    }
  }

  private func readSignals() {
    while case let signal = mountsup_read_signal(signals.raw), signal > 0 {
      switch signal {
      case SIGHUP:
        logger.notice("SIGHUP: reloading the configuration")
        reloads.request()
        inbox.append(.reload)
      default:
        inbox.append(.shutdown(signal: signal, at: .now()))
      }
    }
  }

  /// Brings the mount table up to date and tells each worker's machine whether its mount
  /// appeared or vanished. Every change costs one lookup, whatever the number of mounts.
  private func routeMountChanges() {
    let now = MonotonicInstant.now()
    for change in table.readChanges() {
      switch change {
      case .attached(let entry):
        guard entry.isFUSE, let id = workerAt[entry.mountpoint], let worker = workers[id],
          worker.mountID == nil, !worker.baseline.contains(entry.id)
        else { continue }
        worker.mountID = entry.id
        inbox.append(.mount(worker.mount, .mountAppeared, at: now))
      case .detached(let entry):
        guard let id = workerAt[entry.mountpoint], let worker = workers[id],
          worker.mountID == entry.id
        else { continue }
        worker.mountID = nil
        inbox.append(.mount(worker.mount, .mountVanished, at: now))
      }
    }
  }

  private func readOutput(of worker: Worker, budget: Int) {
    guard let output = worker.output else { return }
    var left = budget
    while left > 0 {
      let result = readBuffer.withUnsafeMutableBytes { buffer in
        Result { () throws(RuntimeError) in
          try output.read(
            into: UnsafeMutableRawBufferPointer(rebasing: buffer[..<min(left, buffer.count)]))
        }
      }
      switch result {
      case .success(let count?) where count > 0:
        left -= count
        let now = MonotonicInstant.now()
        readBuffer.withUnsafeBytes { bytes in
          worker.lines.split(
            UnsafeRawBufferPointer(rebasing: bytes[..<count]),
            wanted: { outputs[worker.mount, default: OutputLog()].admit(now: now, length: $0) },
            line: { record($0, of: worker) })
        }
      case .success(nil):
        return
      case .success, .failure:
        worker.lines.finish(
          wanted: { outputs[worker.mount, default: OutputLog()].admit(now: .now(), length: $0) },
          line: { record($0, of: worker) })
        reportDroppedLines(of: worker)
        loop.remove(output)
        worker.output = nil
        orphanedOutputs[worker.id] = nil
        return
      }
    }
  }

  private func record(_ line: String, of worker: Worker) {
    reportDroppedLines(of: worker)
    outputs[worker.mount, default: OutputLog()].append(line)
    logger(for: worker.mount).info(
      "\(line)", metadata: ["pid": "\(worker.pid)", "source": "worker"])
    control?.outputAppended(line, of: worker.mount)
  }

  /// The "[N lines dropped]" line for output the rate limit held back, once there is some.
  private func reportDroppedLines(of worker: Worker) {
    guard let marker = outputs[worker.mount]?.takeDroppedMarker() else { return }
    outputs[worker.mount, default: OutputLog()].append(marker)
    let limit =
      "more than \(OutputLog.rateBurst) lines or \(OutputLog.rateBytes >> 20) MiB in "
      + formatDuration(OutputLog.rateInterval)
    logger(for: worker.mount).warning(
      "\(marker) (\(limit))", metadata: ["pid": "\(worker.pid)", "source": "worker"])
    control?.outputAppended(marker, of: worker.mount)
  }

  private func readMessages(of worker: Worker) {
    guard let messages = worker.messages else { return }
    while true {
      let got = readBuffer.withUnsafeMutableBytes { buffer in
        Result { () throws(RuntimeError) in try messages.receive(into: buffer) }
      }
      switch got {
      case .success(let count?) where count > 0:
        let message = WorkerMessage(datagram: readBuffer.prefix(count))
        if message.isEmpty {
          logger(for: worker.mount).debug("ignored a message without known keys")
        } else {
          inbox.append(.mount(worker.mount, .message(message), at: .now()))
        }
      case .success(nil):
        return
      case .success, .failure:
        // The worker closed its end (or the socket failed): no more messages.
        loop.remove(messages)
        worker.messages = nil
        return
      }
    }
  }

  private func readNotifySocket(of worker: Worker) {
    guard let socket = worker.notifySocket else { return }
    for datagram in socket.receive(fromSessionOf: worker.pid) {
      inbox.append(.mount(worker.mount, .message(WorkerMessage(datagram: datagram)), at: .now()))
    }
  }

  private func workerExited(_ worker: Worker) {
    // Helpers left in its process group (sshfs's ssh) go with it, before the reap frees the
    // group's id for reuse.
    kill(-worker.pid, SIGKILL)
    guard let status = worker.reap() else { return }
    let now = MonotonicInstant.now()
    // A mount unmounted from outside is gone before its worker exits: the loop may see the exit
    // first, but the machine must learn of the vanished mount first, so that an operator's
    // `umount` is always a failure handled by the restart policy, never a clean exit.
    routeMountChanges()
    let name = worker.mount
    if status == .exited(0), worker.mountID != nil {
      // A FUSE program that forks into the background mounts, then its parent exits 0.
      logger(for: name).warning(
        """
        the worker exited with status 0 while its FUSE mount at \(worker.mountpoint) stayed: the program went \
        to the background; run it in the foreground (most FUSE programs: -f; rclone: without --daemon)
        """)
    }
    // What the worker said and printed last belongs to the reason, so read it before the exit.
    readMessages(of: worker)
    readNotifySocket(of: worker)
    readOutput(of: worker, budget: Int.max)
    forget(worker)
    if worker.output != nil { orphanedOutputs[worker.id] = worker }
    inbox.append(.mount(name, .exited(status, outputTail: outputs[name]?.tail(20) ?? []), at: now))
  }

  /// Stops watching everything of a worker that is gone but its output pipe.
  private func forget(_ worker: Worker) {
    loop.remove(worker.pidfd)
    if let messages = worker.messages { loop.remove(messages) }
    worker.messages = nil
    if let socket = worker.notifySocket { loop.remove(socket.fd) }
    worker.notifySocket = nil
    worker.probe?.cancel()
    workers[worker.id] = nil
    if workerOf[worker.mount] == worker.id { workerOf[worker.mount] = nil }
    if workerAt[worker.mountpoint] == worker.id { workerAt[worker.mountpoint] = nil }
    lastMountSite[worker.mount] = (worker.mountpoint, worker.baseline)
  }

  private func readOffLoop(_ id: Int) {
    guard let (work, purpose) = offLoop[id] else { return }
    let (reports, finished) = work.readReports()
    if finished {
      loop.remove(work.reports)
      offLoop[id] = nil
    }
    guard !work.isCancelled else { return }
    let now = MonotonicInstant.now()
    for report in reports {
      switch purpose {
      case .inspection(let name, let attempt, let fsType, let source):
        let code = Int32(report) ?? EIO
        let server: FUSEServer =
          switch code {
          case 0: .foreign
          case ENOTCONN, ECONNABORTED: .gone(reason: errorText(code))
          default: .failing(reason: errorText(code))
          }
        inbox.append(
          .mount(
            name,
            .mountpointInspected(
              attempt: attempt, .fuse(fsType: fsType, source: source, server: server)), at: now))
      case .probe(let name, let attempt, _):
        inbox.append(
          .mount(
            name,
            report.isEmpty
              ? .probeAnswered(attempt: attempt) : .probeFailed(attempt: attempt, report),
            at: now))
      }
    }
  }

  // MARK: The queue

  /// Feeds everything queued to the core, in the order it was read, and carries out the
  /// effects; their answers join the queue and are taken in the same loop.
  private func drain() {
    while inboxNext < inbox.count {
      let input = inbox[inboxNext]
      inboxNext += 1
      switch input {
      case .mount(let name, let event, let at):
        execute(core.handle(event, for: name, now: at))
        if case .spawned(let pid) = event, core.report(of: name)?.pid != pid,
          let worker = workerOf[name].flatMap({ workers[$0] }), worker.pid == pid
        {
          // No machine waits for this worker (never expected; it must not run unsupervised).
          logger(for: name).error("worker \(pid) is not expected by its mount; killing it")
          worker.signal(SIGKILL)
        }
      case .timer(let at):
        execute(core.timerFired(now: at))
      case .shutdown(let signal, let at):
        if core.shuttingDown {
          logger.notice("already stopping; waiting for workers to exit")
          continue
        }
        logger.notice("received \(signal == SIGINT ? "SIGINT" : "SIGTERM"); stopping all mounts")
        execute(core.shutdown(now: at))
        notifier.stopping(status: core.statusLine)
      case .operate(let action, let names, let at):
        for name in names {
          switch action {
          case .start: execute(core.operatorStart(name, now: at))
          case .stop: execute(core.operatorStop(name, now: at))
          case .restart: execute(core.operatorRestart(name, now: at))
          }
        }
      case .reload:
        startDueReload()
      }
    }
    inbox.removeAll(keepingCapacity: true)
    inboxNext = 0
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
        // The failure itself was logged as it happened; here what it means, and what led to it.
        logger.error(
          "cannot start: required mount \(name) failed; stopping every mount",
          metadata: ["mount": "\(name)"])
        for line in failure.outputTail.suffix(10) {
          logger.error("  | \(line)", metadata: ["mount": "\(name)"])
        }
        notifier.failure(status: core.statusLine, errno: failure.errno)
      case .exit(let code):
        // A failure that ends the service was logged when it happened.
        logger.notice(code == 0 ? "all mounts stopped" : "exiting with status \(code)")
        exitCode = code
      }
    }
  }

  /// What follows a turn: answers for whoever waits on the mounts that changed, the reload in
  /// progress, STATUS, and the timer at the next deadline.
  private func afterTurn() {
    let changed = core.takeChangedMounts()
    for name in changed where core.report(of: name) == nil {
      // A reload removed it and its worker is gone: nothing of it is kept.
      outputs[name] = nil
      lastMountSite[name] = nil
      mountLoggers[name] = nil
    }
    if !changed.isEmpty {
      control?.mountsChanged(changed)
      if reloads.mountsChanged(changed, core: core, notifier: notifier, status: serviceStatus) {
        inbox.append(.reload)
      }
    }
    control?.evaluateSubmitted()
    timer.arm(at: [core.nextDeadline, control?.nextDeadline].compactMap { $0 }.min()?.nanoseconds)
    // While required mounts are legitimately starting, ask the service manager for the time
    // their start timeouts allow, plus a margin for the cleanup after a failure.
    var moreTime: UInt64?
    if let deadline = core.startupDeadline {
      let now = MonotonicInstant.now()
      let remaining = deadline > now ? (deadline - now).nanosecondsClamped / 1000 : 0
      moreTime = UInt64(remaining) + 5_000_000
    }
    notifier.progress(status: changed.isEmpty ? nil : serviceStatus, extendBy: moreTime)
  }

  // MARK: Effects out

  private func perform(_ effect: MountMachine.Effect, for name: String) {
    switch effect {
    case .inspectMountpoint(let attempt, let mountpoint):
      inspect(mountpoint, for: name, attempt: attempt)
    case .detachStaleMount(let attempt, let mountpoint):
      if let problem = Unmounting.detach(mountpoint, asRoot: unmountsAsRoot) {
        inbox.append(
          .mount(
            name,
            .prepareFailed(
              attempt: attempt,
              Failure(summary: "cannot clear the FUSE mount at \(mountpoint): \(problem)")),
            at: .now()))
      }
    case .endLeftoverWorkers(let pids):
      for pid in pids {
        kill(-pid, SIGKILL)
        kill(pid, SIGKILL)
      }
    case .createMountpoint(let attempt, let mountpoint, let user):
      let event: MountMachine.Event
      do {
        try makeMountpoint(mountpoint, user: user)
        event = .prepared(attempt: attempt)
      } catch {
        event = .prepareFailed(attempt: attempt, Failure(summary: error.description))
      }
      inbox.append(.mount(name, event, at: .now()))
    case .spawn(let attempt, let spec):
      spawnQueue.append((name, attempt, spec))
    case .startProbe(let attempt, let mountpoint, let probePath):
      startProbe(for: name, attempt: attempt, mountpoint: mountpoint, probePath: probePath)
    case .cancelProbe:
      if let worker = workerOf[name].flatMap({ workers[$0] }) {
        worker.probe?.cancel()
        worker.probe = nil
      }
    case .unmount:
      guard let worker = workerOf[name].flatMap({ workers[$0] }) else { return }
      if let problem = Unmounting.unmount(worker.mountpoint, asRoot: unmountsAsRoot) {
        logger(for: name).warning("\(problem)")
      }
    case .signal(let signal):
      workerOf[name].flatMap { workers[$0] }?.signal(signal)
    case .detachMount:
      detachOwnMount(name)
    case .log(let level, let message):
      logger(for: name).log(level: level.loggerLevel, "\(message)")
    }
  }

  /// Gathers what is at the mountpoint for the core to decide on: the mount table, workers of
  /// an earlier run (from /proc, without touching the mount), and off the loop the owner's
  /// `statfs`, which a hung server would block.
  private func inspect(_ mountpoint: String, for name: String, attempt: Int) {
    routeMountChanges()
    let site: MountSite
    if let top = table.mounts(at: mountpoint).last {
      if !top.isFUSE {
        site = .other(fsType: top.fsType, source: top.source)
      } else if case let found = LeftoverWorkers.serving(mountpoint),
        let server: FUSEServer = found.otherSupervisors.first.map({ .otherSupervisor(pid: $0) })
          ?? (found.leftovers.isEmpty ? nil : .leftover(pids: found.leftovers))
      {
        site = .fuse(fsType: top.fsType, source: top.source, server: server)
      } else {
        let owner = top.owner
        let work = startOffLoop(
          .inspection(mount: name, attempt: attempt, fsType: top.fsType, source: top.source)
        ) { report, _ in
          report(String(MountAccess.statfsError(mountpoint, as: owner)))
        }
        guard work == nil else { return }
        site = .fuse(
          fsType: top.fsType, source: top.source,
          server: .failing(reason: "no thread left to ask it (too many hung mounts)"))
      }
    } else {
      site = .empty
    }
    inbox.append(.mount(name, .mountpointInspected(attempt: attempt, site), at: .now()))
  }

  private func startProbe(
    for name: String, attempt: Int, mountpoint: String, probePath: String?
  ) {
    guard let worker = workerOf[name].flatMap({ workers[$0] }) else { return }
    let owner = worker.mountID.flatMap { table.entry(id: $0) }?.owner
    let target = probePath.map { mountpoint + "/" + $0 }
    worker.probe = startOffLoop(.probe(mount: name, attempt: attempt, worker: worker.id)) {
      report, isCancelled in
      if let owner, case let code = owner.assumeOnThisThread(), code != 0 {
        report(
          "cannot probe as the mount's owner (uid \(owner.uid), gid \(owner.gid)): \(errorText(code))"
        )
        return
      }
      var pause: UInt32 = 50_000
      while !isCancelled() {
        let failure = MountAccess.probe(mountpoint, target)
        guard !isCancelled() else { return }
        report(failure ?? "")
        if failure == nil { return }
        usleep(pause)
        pause = min(pause * 2, 1_000_000)
      }
    }
    if worker.probe == nil {
      inbox.append(
        .mount(
          name,
          .probeFailed(attempt: attempt, "no thread left to probe with (too many hung mounts)"),
          at: .now()))
    }
  }

  /// Runs `body` off the loop; nil when no thread could be started.
  private func startOffLoop(
    _ purpose: OffLoopPurpose,
    body: @escaping @Sendable (_ report: (String) -> Void, _ isCancelled: () -> Bool) -> Void
  ) -> OffLoopWork? {
    let id = nextOffLoopID
    guard let work = OffLoopWork(id: id, body: body) else { return nil }
    guard (try? loop.add(work.reports, as: .offLoop(id))) != nil else {
      work.cancel()
      return nil
    }
    nextOffLoopID += 1
    offLoop[id] = (work, purpose)
    return work
  }

  /// `mkdir -p`; a directory it creates for a non-root worker belongs to that worker's user.
  private func makeMountpoint(_ mountpoint: String, user: String?) throws(RuntimeError) {
    let account = user.flatMap(Accounts.user)
    try makeDirectories(mountpoint) { created in
      if let account { chown(created, account.uid, account.gid) }
    }
    var info = stat()
    try system(.mountpoint, "cannot use the mountpoint \(mountpoint)") { stat(mountpoint, &info) }
    guard info.st_mode & S_IFMT == S_IFDIR else {
      throw RuntimeError(.mountpoint, "the mountpoint \(mountpoint) is not a directory")
    }
  }

  /// Starts the queued workers, a bounded number per turn.
  private func spawnSome() {
    var spawned = 0
    while spawnNext < spawnQueue.count, spawned < Self.spawnsPerTurn {
      let (name, attempt, spec) = spawnQueue[spawnNext]
      spawnNext += 1
      // The machine may have moved on (a stop) while the spawn waited its turn.
      guard core.awaitsSpawn(name, attempt: attempt) else { continue }
      spawned += 1
      spawn(name, attempt: attempt, spec: spec)
    }
    if spawnNext == spawnQueue.count {
      spawnQueue.removeAll(keepingCapacity: true)
      spawnNext = 0
    }
  }

  private func spawn(_ name: String, attempt: Int, spec: MountSpec) {
    let id = nextWorkerID
    nextWorkerID += 1
    let event: MountMachine.Event
    do {
      let worker = try launch(spec, as: id)
      event = .spawned(pid: worker.pid)
    } catch {
      let lasting: Set<RuntimeError.Code> = [.executableNotFound, .unknownAccount]
      event = .spawnFailed(
        Failure(
          summary: error.description, errno: error.errno,
          isCertainToRepeat: lasting.contains(error.code)))
    }
    inbox.append(.mount(name, event, at: .now()))
  }

  /// Starts a worker and watches it; every descriptor made on the way closes if a step fails.
  private func launch(_ spec: MountSpec, as id: WorkerID) throws(RuntimeError) -> Worker {
    let notifySocket: WorkerNotifySocket?
    switch spec.readiness {
    case .notify: notifySocket = try WorkerNotifySocket(worker: id)
    case .protocol, .probe: notifySocket = nil
    }
    var plan = try LaunchPlan(
      spec: spec, inherited: inheritedEnvironment, commands: commands,
      notifySocket: notifySocket?.address)
    plan.descriptorLimit = inheritedDescriptorLimit
    let (messages, theirMessages) = try Descriptor.socketPair(Int32(SOCK_SEQPACKET.rawValue))
    let (output, theirOutput) = try Descriptor.pipe()
    try output.setNonBlocking()
    routeMountChanges()
    let baseline = Set(table.fuseMounts(at: spec.mountpoint).map(\.id))
    let (pid, pidfd) = try plan.launch(
      notify: theirMessages, output: theirOutput, slots: spawnSlots)
    let worker = Worker(
      id: id, mount: spec.name, pid: pid, pidfd: pidfd, messages: messages, output: output,
      mountpoint: spec.mountpoint, baseline: baseline)
    worker.notifySocket = notifySocket
    do {
      try loop.add(pidfd, as: .workerExit(id))
      try loop.add(messages, as: .workerMessages(id))
      try loop.add(output, as: .workerOutput(id))
      if let notifySocket { try loop.add(notifySocket.fd, as: .workerNotifySocket(id)) }
    } catch {
      // A worker the loop cannot watch must not run unsupervised.
      worker.signal(SIGKILL)
      _ = retryingOnInterrupt { waitid(P_PIDFD, id_t(pidfd.raw), nil, WEXITED) }
      for fd in [pidfd, messages, output] + [notifySocket?.fd].compactMap({ $0 }) {
        loop.remove(fd)
      }
      throw error
    }
    workers[id] = worker
    workerOf[spec.name] = id
    workerAt[spec.mountpoint] = id
    logger(for: spec.name).info("worker started", metadata: ["pid": "\(pid)"])
    return worker
  }

  /// Lazily detaches a FUSE mount the (now exiting or dead) worker left at its mountpoint. Mounts
  /// that were there before it started are not its own and stay.
  private func detachOwnMount(_ name: String) {
    routeMountChanges()
    let current = workerOf[name].flatMap { workers[$0] }
    guard
      let (mountpoint, baseline) = current.map({ ($0.mountpoint, $0.baseline) })
        ?? lastMountSite[name]
    else { return }
    for entry in table.fuseMounts(at: mountpoint).reversed() where !baseline.contains(entry.id) {
      if let problem = Unmounting.detach(mountpoint, asRoot: unmountsAsRoot) {
        logger(for: name).warning("\(problem)")
        return
      }
      logger(for: name).info("detached the worker's FUSE mount at \(mountpoint) (\(entry.fsType))")
    }
  }

  // MARK: Reloads

  /// Applies the next reload if one is due and none is settling.
  private func startDueReload() {
    guard reloads.isDue else { return }
    reloads.begin(
      shuttingDown: core.shuttingDown, readyAnnounced: core.readyAnnounced, notifier: notifier)
    guard !core.shuttingDown else { return }
    do {
      let next = try loadConfiguration()
      if next.supervisor.controlSocket != configuration.supervisor.controlSocket {
        logger.warning(
          "control_socket changed to \(next.supervisor.controlSocket); it takes effect when mountsupd restarts"
        )
      }
      let (summary, effects) = core.apply(specs: next.mounts, now: .now())
      configuration = next
      logger.notice("reloaded: \(summary)")
      execute(effects)
      reloads.applied(summary, core: core)
      _ = reloads.mountsChanged([], core: core, notifier: notifier, status: serviceStatus)
    } catch {
      reloads.failed(error, notifier: notifier, status: serviceStatus)
    }
    if reloads.isDue { inbox.append(.reload) }
  }

  /// The logger of one mount (its name as metadata), made once per mount.
  private func logger(for name: String) -> Logger {
    if let cached = mountLoggers[name] { return cached }
    var mountLogger = logger
    mountLogger[metadataKey: "mount"] = "\(name)"
    mountLoggers[name] = mountLogger
    return mountLogger
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

// MARK: What the control server may ask

extension Supervisor: ControlHost {
  var supervisorCore: SupervisorCore { core }
  var currentConfiguration: Configuration { configuration }
  var isReloading: Bool { reloads.isReloading }

  var serviceStatus: String {
    guard let error = reloads.lastError else { return core.statusLine }
    return "\(core.statusLine); last reload failed: \(error)"
  }

  func outputLines(of name: String) -> [String] { outputs[name]?.lines ?? [] }

  func submit(_ action: OperatorAction, _ names: [String]) {
    inbox.append(.operate(action, names, at: .now()))
  }

  func requestReload(_ completion: @escaping (ReloadCoordinator.Outcome) -> Void) {
    reloads.request(completion)
    inbox.append(.reload)
  }
}
