import CMountWorkerKitSupport
import Glibc
import Synchronization

/// FUSE passthrough for one session: the kernel reads, writes and maps an open file through a
/// backing file the worker registered, without a request to the worker.
///
/// The kit negotiates it in INIT (libfuse 3.14 cannot), registers the descriptor a file system
/// returns with an open (``FUSEOpenReply/passthrough``) and closes the registration when the
/// last passing-through open of that node is released. Backing ids are per node, not per open:
/// the kernel refuses (EIO) an open whose backing file differs from the one the node's other
/// open files use. Every id is recorded (``PassthroughRecords``) for a successor that resumes
/// the connection, since the ids live on the connection.
final class Passthrough: Sendable {
  private struct Backing {
    var id: Int32
    var opens: Int
  }

  private struct OpenFile: Hashable {
    var node: UInt64
    var handle: UInt64
  }

  private struct Table {
    var nodes: [UInt64: Backing] = [:]
    /// The records of each passing-through open (-1 where nothing is recorded). A handle the
    /// file system gave to several opens has several.
    var opens: [OpenFile: [Int]] = [:]
  }

  private let records: PassthroughRecords?
  private let table = Mutex(Table())
  private let device = Atomic<Int32>(-1)
  private let isActive = Atomic<Bool>(false)
  private let registrationFailureSaid = Atomic<Bool>(false)

  /// With the records of `state`'s kit part; those of a predecessor are taken over.
  init(state: FUSEPersistentState?) {
    records = state?.kitBytes.map(PassthroughRecords.init(bytes:))
    guard let records, state?.isInherited == true else { return }
    table.withLock { table in
      for record in records.live {
        table.nodes[record.node, default: Backing(id: record.backingID, opens: 0)].opens += 1
        table.opens[OpenFile(node: record.node, handle: record.handle), default: []].append(
          record.index)
      }
    }
  }

  /// The connection's /dev/fuse descriptor, on which backing files are registered.
  func serve(on descriptor: Int32) { device.store(descriptor, ordering: .relaxed) }

  /// Why this worker cannot use passthrough, or nil. Valid from the init callback on.
  static func unavailability() -> String? {
    if mwk_init_offers_passthrough() == 0 {
      return "the kernel does not offer it (Linux 6.9 or later with CONFIG_FUSE_PASSTHROUGH)"
    }
    if mwk_may_register_backing_files() == 0 {
      return "the worker lacks CAP_SYS_ADMIN in the initial user namespace"
    }
    return nil
  }

  /// Decides in the init callback, after the file system's `initialize`: the max_stack_depth
  /// for the INIT reply (0: none). A fresh worker that asked for passthrough says once on stderr
  /// whether it is on; a resumed one uses what its predecessor negotiated, since the kernel
  /// keeps the predecessor's answer.
  func negotiate(_ connection: FUSEConnection, resumed: Bool) -> UInt32 {
    guard connection.passthrough else { return 0 }
    if resumed {
      isActive.store(records?.isNegotiated == true, ordering: .relaxed)
      return 0
    }
    if let reason = connection.passthroughUnavailable {
      Passthrough.say("not used: \(reason); reads and writes go through the worker")
      return 0
    }
    if connection.wanted.contains(.writebackCache) {
      Passthrough.say("not used with the writeback cache; reads and writes go through the worker")
      return 0
    }
    records?.isNegotiated = true
    isActive.store(true, ordering: .relaxed)
    Passthrough.say("on: reads, writes and mmap of open files go straight to their backing files")
    return min(connection.backingStackDepth, 1) + 1
  }

  /// The backing id for an open that `reply` answers on `node`, registering the reply's
  /// descriptor if the node has none yet; nil for the ordinary path (passthrough off, no
  /// descriptor, or one the kernel would not take). Throws ENFILE when no record is free.
  func attach(_ reply: FUSEOpenReply, node: UInt64) throws(FUSEError) -> Int32? {
    guard isActive.load(ordering: .relaxed), let descriptor = reply.passthrough,
      !reply.nonSeekable
    else { return nil }
    return try table.withLock { table throws(FUSEError) -> Int32? in
      var backing = table.nodes[node]
      if backing == nil {
        let id = mwk_backing_open(device.load(ordering: .relaxed), descriptor)
        guard id > 0 else {
          // EINVAL: not a regular file (a FIFO, a device), which only the worker can serve.
          if id != -EINVAL { sayRegistrationFailure(-id) }
          return nil
        }
        backing = Backing(id: id, opens: 0)
      }
      var record = -1
      if let records {
        guard
          let index = records.allocate(node: node, handle: reply.handle, backingID: backing!.id)
        else {
          if backing!.opens == 0 { mwk_backing_close(device.load(ordering: .relaxed), backing!.id) }
          throw FUSEError(ENFILE)
        }
        record = index
      }
      backing!.opens += 1
      table.nodes[node] = backing
      table.opens[OpenFile(node: node, handle: reply.handle), default: []].append(record)
      return backing!.id
    }
  }

  /// An open of `node` with `handle` is released (or its reply was not delivered); the last
  /// one of the node closes its backing id.
  func detach(node: UInt64, handle: UInt64) {
    table.withLock { table in
      let key = OpenFile(node: node, handle: handle)
      guard var list = table.opens[key], let record = list.popLast() else { return }
      table.opens[key] = list.isEmpty ? nil : list
      if record >= 0 { records?.free(record) }
      guard var backing = table.nodes[node] else { return }
      backing.opens -= 1
      if backing.opens > 0 {
        table.nodes[node] = backing
        return
      }
      table.nodes[node] = nil
      mwk_backing_close(device.load(ordering: .relaxed), backing.id)
    }
  }

  private func sayRegistrationFailure(_ code: Int32) {
    guard !registrationFailureSaid.exchange(true, ordering: .relaxed) else { return }
    Passthrough.say(
      "cannot register a backing file (\(String(cString: strerror(code)))); "
        + "files that cannot be registered are served by the worker")
  }

  private static func say(_ message: String) {
    let line = "\(FUSEWorker.programName): passthrough \(message)\n"
    _ = line.utf8CString.withUnsafeBufferPointer { write(2, $0.baseAddress, $0.count - 1) }
  }
}
