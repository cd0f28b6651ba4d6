import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountCore

/// Reading what is ready: every source only puts events on the queue.
extension Supervisor {

  func read(_ source: Source, _ events: UInt32) {
    switch source {
    case .signals:
      readSignals()
    case .timer:
      timer.acknowledge()
      let now = MonotonicInstant.now()
      control?.timerFired(now: now)
      upgradeTimerFired(now: now)
      inbox.append(.timer(at: now))
    case .serviceManager:
      notifier.flush()
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
    case .hangWatcher:
      readHangReports()
    case .upgradeCheck:
      readUpgradeCheck()
    case .metricsListener:
      metricsListener?.acceptClients()
    case .metricsClient(let id):
      metricsListener?.clientEvent(id)
    case .configWatch:
      configWatch?.readEvents(now: .now())
    }
  }

  func readSignals() {
    while case let signal = mountsup_read_signal(signals.raw), signal > 0 {
      switch signal {
      case SIGHUP:
        logger.notice("SIGHUP: reloading the configuration")
        reloads.request()
        inbox.append(.reload)
      case SIGUSR2:
        logger.notice("SIGUSR2: upgrading to the binary mountsupd was started from")
        requestUpgrade(binary: nil, requester: nil)
      default:
        inbox.append(.shutdown(signal: signal, at: .now()))
      }
    }
  }

  /// Brings the mount table up to date and tells each worker's machine whether its mount
  /// appeared or vanished. Every change costs one lookup, whatever the number of mounts.
  func routeMountChanges() {
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

  func readOutput(of worker: Worker, budget: Int) {
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

  func record(_ line: String, of worker: Worker) {
    reportDroppedLines(of: worker)
    outputs[worker.mount, default: OutputLog()].append(line)
    logger(for: worker.mount).info(
      "\(line)", metadata: ["pid": "\(worker.pid)", "source": "worker"])
    control?.outputAppended(line, of: worker.mount)
  }

  /// The "[N lines dropped]" line for output the rate limit held back, once there is some.
  func reportDroppedLines(of worker: Worker) {
    guard let marker = outputs[worker.mount]?.takeDroppedMarker() else { return }
    outputs[worker.mount, default: OutputLog()].append(marker)
    let limit =
      "more than \(OutputLog.rateBurst) lines or \(OutputLog.rateBytes >> 20) MiB in "
      + formatDuration(OutputLog.rateInterval)
    logger(for: worker.mount).warning(
      "\(marker) (\(limit))", metadata: ["pid": "\(worker.pid)", "source": "worker"])
    control?.outputAppended(marker, of: worker.mount)
  }

  func readMessages(of worker: Worker) {
    guard let messages = worker.messages else { return }
    while true {
      let got = readBuffer.withUnsafeMutableBytes { buffer in
        Result { () throws(RuntimeError) in try messages.receive(into: buffer) }
      }
      switch got {
      case .success(let (count, descriptors)?) where count > 0:
        let message = WorkerMessage(datagram: readBuffer.prefix(count))
        if let request = message.fuseInit, let fuse = descriptors.first {
          takeConnection(
            of: worker, fuse: fuse, state: descriptors.dropFirst().first, initRequest: request)
        }
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

  /// Keeps the FUSE connection a worker handed over, when the kernel can resend a crashed
  /// worker's requests to a successor; otherwise lets it go (it closes with the wrappers) and
  /// says once that crashes end mounts as before.
  func takeConnection(
    of worker: Worker, fuse: Descriptor, state: Descriptor?, initRequest: [UInt8]
  ) {
    guard WorkerMessage.initOffersResend(initRequest) else {
      if !saidKernelCannotResend {
        saidKernelCannotResend = true
        logger.notice(
          """
          this kernel does not offer FUSE_HAS_RESEND (Linux 6.9 or later): workers that hand over \
          their FUSE connection are still detached and restarted when they crash
          """)
      }
      return
    }
    routeMountChanges()  // the worker's mount id, if the table change is not read yet
    let held = HeldConnection(
      fuse: fuse, state: state, initRequest: initRequest, mountID: worker.mountID)
    heldConnections[worker.mount] = held
    held.store(in: notifier, for: worker.mount, logger: logger(for: worker.mount))
    inbox.append(.mount(worker.mount, .connectionHeld, at: .now()))
  }

  func readNotifySocket(of worker: Worker) {
    guard let socket = worker.notifySocket else { return }
    for datagram in socket.receive(fromSessionOf: worker.pid) {
      inbox.append(.mount(worker.mount, .message(WorkerMessage(datagram: datagram)), at: .now()))
    }
  }

  func workerExited(_ worker: Worker) {
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
  func forget(_ worker: Worker) {
    loop.remove(worker.pidfd)
    if let messages = worker.messages { loop.remove(messages) }
    worker.messages = nil
    if let socket = worker.notifySocket { loop.remove(socket.fd) }
    worker.notifySocket = nil
    worker.probe?.cancel()
    worker.hangProbe?.cancel()
    workers[worker.id] = nil
    if workerOf[worker.mount] == worker.id { workerOf[worker.mount] = nil }
    if workerAt[worker.mountpoint] == worker.id { workerAt[worker.mountpoint] = nil }
    lastMountSite[worker.mount] = (worker.mountpoint, worker.baseline)
  }

  func readOffLoop(_ id: Int) {
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
      case .hangProbe(let name, let attempt):
        inbox.append(
          .mount(
            name,
            report.isEmpty
              ? .hangProbeAnswered(attempt: attempt) : .hangProbeStep(attempt: attempt, report),
            at: now))
      case .unmounts:
        let parts = report.split(separator: "\t", maxSplits: 1)
        guard parts.count == 2 else { continue }
        logger(for: String(parts[0])).warning("\(parts[1])")
      }
    }
  }
}

/// The hang check: which mounts it watches, and what it reports.
extension Supervisor {
  /// The fusectl connection of a worker's mount, once the mount table has shown it.
  func connection(of worker: Worker) -> UInt32? {
    worker.mountID.flatMap { table.entry(id: $0) }?.deviceMinor
  }

  /// Watches a ready mount with a `hang_timeout`, and stops watching any other.
  func updateHangWatch(_ name: String) {
    guard let machine = core.machines[name], machine.isReady, machine.spec.hangTimeout > .zero,
      let worker = workerOf[name].flatMap({ workers[$0] }), let connection = connection(of: worker)
    else {
      hangWatcher?.unwatch(name)
      return
    }
    guard let watcher = startHangWatcher() else { return }
    watcher.watch(name, connection: connection, timeout: machine.spec.hangTimeout)
  }

  /// The watcher, started (and fusectl mounted) the first time a mount needs it; nil, said
  /// once, where hangs cannot be checked.
  func startHangWatcher() -> HangWatcher? {
    if let hangWatcher { return hangWatcher }
    guard hangCheckUnavailable == nil else { return nil }
    do throws(RuntimeError) {
      if let problem = FuseControl.ensureMounted() {
        throw RuntimeError(.eventLoop, problem)
      }
      let watcher = try HangWatcher()
      try loop.add(watcher.reports, as: .hangWatcher)
      hangWatcher = watcher
      logger.info(
        "hang check: fusectl's waiting count once per period (a quarter of the shortest hang_timeout, 250 ms to 15 s)"
      )
      return watcher
    } catch {
      hangCheckUnavailable = error.description
      logger.warning(
        "hung mounts are not detected: \(error.description); set hang_timeout = 0 to silence this"
      )
      return nil
    }
  }

  func readHangReports() {
    guard let watcher = hangWatcher else { return }
    let now = MonotonicInstant.now()
    for report in watcher.readReports() {
      // A report about an earlier worker's connection is stale.
      guard let worker = workerOf[report.name].flatMap({ workers[$0] }),
        connection(of: worker) == report.connection
      else { continue }
      inbox.append(.mount(report.name, .requestsWaiting(report.waiting), at: now))
    }
  }
}

/// Connections an earlier run held, given back by systemd's fd store at this start.
extension Supervisor {
  /// Each configured mount whose connection came back, with its mount still in the table, is
  /// resumed by its first worker instead of being detached and mounted anew; the rest is let go
  /// (the kernel aborts a connection no one holds) and taken out of the store.
  func adoptStoredConnections(_ stored: [String: Descriptor]) {
    guard !stored.isEmpty else { return }
    typealias Role = HeldConnection.StoredRole
    var mounts = Set<String>()
    for name in stored.keys {
      for role in Role.allCases where name.hasPrefix(role.rawValue + ".") {
        mounts.insert(String(name.dropFirst(role.rawValue.count + 1)))
      }
    }
    routeMountChanges()
    let now = MonotonicInstant.now()
    for mount in mounts.sorted() {
      let fuse = stored[Role.fuse.name(for: mount)]
      let request = stored[Role.initRequest.name(for: mount)].map(HeldConnection.contents(of:))
      let entry = core.machines[mount].flatMap { table.fuseMounts(at: $0.spec.mountpoint).last }
      guard let fuse, let request, !request.isEmpty, let entry,
        core.adoptHeldConnection(mount, now: now)
      else {
        logger(for: mount).notice(
          "an earlier mountsupd held this mount's FUSE connection; it is not resumed (the mount or its configuration is gone)"
        )
        HeldConnection.forgetStored(in: notifier, for: mount)
        continue
      }
      heldConnections[mount] = HeldConnection(
        fuse: fuse, state: stored[Role.state.name(for: mount)], initRequest: request,
        mountID: entry.id)
      logger(for: mount).notice(
        "resuming the FUSE connection an earlier mountsupd held at \(entry.mountpoint)")
    }
  }
}
