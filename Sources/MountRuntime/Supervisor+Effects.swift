import CLinuxSupport
import Glibc
import Logging
import MountConfig
import MountCore

/// Carrying out what the core decided: mountpoints, spawns, probes, unmounts and detaches.
extension Supervisor {

  func perform(_ effect: MountMachine.Effect, for name: String) {
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
      spawnQueue.append((name, attempt, spec, false))
    case .resume(let attempt, let spec):
      spawnQueue.append((name, attempt, spec, true))
    case .releaseConnection:
      // The kernel aborts the connection once no worker holds it either (a successor being
      // killed lets go when it dies).
      if heldConnections.removeValue(forKey: name) != nil {
        HeldConnection.forgetStored(in: notifier, for: name)
      }
    case .startProbe(let attempt, let mountpoint, let probePath):
      startProbe(for: name, attempt: attempt, mountpoint: mountpoint, probePath: probePath)
    case .cancelProbe:
      if let worker = workerOf[name].flatMap({ workers[$0] }) {
        worker.probe?.cancel()
        worker.probe = nil
      }
    case .unmount:
      guard let worker = workerOf[name].flatMap({ workers[$0] }) else { return }
      if core.shuttingDown {
        // Unmounted together at the end of the turn, on threads of their own.
        shutdownUnmounts.append((name, worker.mountpoint))
      } else if let problem = Unmounting.unmount(worker.mountpoint, asRoot: unmountsAsRoot) {
        logger(for: name).warning("\(problem)")
      }
    case .signal(let signal):
      workerOf[name].flatMap { workers[$0] }?.signal(signal)
    case .detachMount:
      detachOwnMount(name)
    case .startHangProbe(let attempt, let mountpoint, let probePath):
      startHangProbe(for: name, attempt: attempt, mountpoint: mountpoint, probePath: probePath)
    case .cancelHangProbe:
      if let worker = workerOf[name].flatMap({ workers[$0] }) {
        worker.hangProbe?.cancel()
        worker.hangProbe = nil
      }
    case .abortConnection:
      guard let worker = workerOf[name].flatMap({ workers[$0] }),
        let connection = connection(of: worker)
      else { return }
      if let problem = FuseControl.ensureMounted() ?? FuseControl.abort(connection: connection) {
        logger(for: name).error("cannot abort the FUSE connection: \(problem)")
      }
    case .log(let level, let message):
      logger(for: name).log(level: level.loggerLevel, "\(message)")
    }
  }

  /// Gathers what is at the mountpoint for the core to decide on: the mount table, workers of
  /// an earlier run (from /proc, without touching the mount), and off the loop the owner's
  /// `statfs`, which a hung server would block.
  func inspect(_ mountpoint: String, for name: String, attempt: Int) {
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

  func startProbe(
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

  /// The hang probe: as the mount's owner (for anyone else the kernel answers `statfs` itself),
  /// `statfs` of the mountpoint, then a stat of the probe path; each step is reported before it
  /// is taken, and an empty report says that all were answered, whatever the answer.
  func startHangProbe(for name: String, attempt: Int, mountpoint: String, probePath: String?) {
    guard let worker = workerOf[name].flatMap({ workers[$0] }) else { return }
    let owner = worker.mountID.flatMap { table.entry(id: $0) }?.owner
    let target = probePath.map { mountpoint + "/" + $0 }
    worker.hangProbe?.cancel()
    worker.hangProbe = startOffLoop(.hangProbe(mount: name, attempt: attempt)) { report, _ in
      if let owner, case let code = owner.assumeOnThisThread(), code != 0 {
        report("")
        return
      }
      var fs = statfs()
      _ = statfs(mountpoint, &fs)
      if let target {
        report("stat of \(target)")
        var info = stat()
        _ = stat(target, &info)
      }
      report("")
    }
    if worker.hangProbe == nil {
      inbox.append(
        .mount(
          name,
          .hangProbeUnavailable(
            attempt: attempt, "no thread left to probe with (too many hung mounts)"),
          at: .now()))
    }
  }

  /// The unmounts of a shutdown, on `unmountThreads` threads at once. An unmount waits on the
  /// kernel (an RCU grace period, the removal of the connection's sysfs and fusectl entries):
  /// one after the other, a thousand mounts took a quarter of a second to stop, most of it
  /// waiting. No mount is started again during a shutdown, so none of these can hit a successor.
  func startShutdownUnmounts() {
    guard !shutdownUnmounts.isEmpty else { return }
    let jobs = shutdownUnmounts
    shutdownUnmounts.removeAll()
    let asRoot = unmountsAsRoot
    let threads = min(Self.unmountThreads, jobs.count)
    for first in 0..<threads {
      let batch = stride(from: first, to: jobs.count, by: threads).map { jobs[$0] }
      let work = startOffLoop(.unmounts) { report, _ in
        for (name, mountpoint) in batch {
          if let problem = Unmounting.unmount(mountpoint, asRoot: asRoot) {
            report("\(name)\t\(problem)")
          }
        }
      }
      guard work == nil else { continue }
      // No thread to spare: here, one after the other.
      for (name, mountpoint) in batch {
        if let problem = Unmounting.unmount(mountpoint, asRoot: asRoot) {
          logger(for: name).warning("\(problem)")
        }
      }
    }
  }

  /// Runs `body` off the loop; nil when no thread could be started.
  func startOffLoop(
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
  func makeMountpoint(_ mountpoint: String, user: String?) throws(RuntimeError) {
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
  func spawnSome() {
    var spawned = 0
    while spawnNext < spawnQueue.count, spawned < Self.spawnsPerTurn {
      let (name, attempt, spec, resume) = spawnQueue[spawnNext]
      spawnNext += 1
      // The machine may have moved on (a stop) while the spawn waited its turn.
      guard core.awaitsSpawn(name, attempt: attempt) else { continue }
      spawned += 1
      spawn(name, attempt: attempt, spec: spec, resume: resume)
    }
    if spawnNext == spawnQueue.count {
      spawnQueue.removeAll(keepingCapacity: true)
      spawnNext = 0
    }
  }

  func spawn(_ name: String, attempt: Int, spec: MountSpec, resume: Bool) {
    let id = nextWorkerID
    nextWorkerID += 1
    // The start timeout counts from before the clone: the worker can do nothing earlier, and the
    // daemon may be held up (preempted, stopped) between the clone and any later reading of the
    // clock, which would move the deadline past a READY sent after it.
    let spawnedAt = MonotonicInstant.now()
    let event: MountMachine.Event
    do throws(RuntimeError) {
      let connection = resume ? heldConnections[name] : nil
      if resume, connection == nil {
        throw RuntimeError(.spawn, "no held FUSE connection of \(name) to resume")
      }
      let worker = try launch(spec, as: id, resuming: connection)
      event = .spawned(pid: worker.pid)
    } catch {
      // A program moved or installed since is looked up again at the next start.
      if let command = spec.command.first { resolvedCommands[command] = nil }
      let lasting: Set<RuntimeError.Code> = [.executableNotFound, .unknownAccount]
      event = .spawnFailed(
        Failure(
          summary: error.description, errno: error.errno,
          isCertainToRepeat: lasting.contains(error.code)))
    }
    inbox.append(.mount(name, event, at: spawnedAt))
  }

  /// The executable of a command, looked up once: a thousand mounts of one program search the
  /// path once (a failed spawn forgets it).
  func executable(for command: String?) throws(RuntimeError) -> String {
    if let command, let known = resolvedCommands[command] { return known }
    let path = try LaunchPlan.resolve(command, by: commands)
    if let command { resolvedCommands[command] = path }
    return path
  }

  /// Starts a worker and watches it; every descriptor made on the way closes if a step fails.
  /// With `connection`, a successor that serves that held connection instead of mounting.
  func launch(_ spec: MountSpec, as id: WorkerID, resuming connection: HeldConnection? = nil)
    throws(RuntimeError) -> Worker
  {
    let notifySocket: WorkerNotifySocket?
    switch spec.readiness {
    case .notify: notifySocket = try WorkerNotifySocket(worker: id)
    case .protocol, .probe: notifySocket = nil
    }
    var plan = try LaunchPlan(
      spec: spec, executable: executable(for: spec.command.first), inherited: inheritedEnvironment,
      notifySocket: notifySocket?.address, resuming: connection != nil)
    plan.descriptorLimit = inheritedDescriptorLimit
    let (messages, theirMessages) = try Descriptor.socketPair(Int32(SOCK_SEQPACKET.rawValue))
    try connection?.sendResume(on: messages)
    let (output, theirOutput) = try Descriptor.pipe()
    try output.setNonBlocking()
    routeMountChanges()
    // A successor's mount is the held one, already there: its own, not the baseline's.
    var baseline = Set(table.fuseMounts(at: spec.mountpoint).map(\.id))
    if let held = connection?.mountID { baseline.remove(held) }
    let (pid, pidfd) = try plan.launch(
      notify: theirMessages, output: theirOutput, slots: spawnSlots)
    let worker = Worker(
      id: id, mount: spec.name, pid: pid, pidfd: pidfd, messages: messages, output: output,
      mountpoint: spec.mountpoint, baseline: baseline)
    worker.notifySocket = notifySocket
    worker.mountID = connection?.mountID
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
  func detachOwnMount(_ name: String) {
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
}
