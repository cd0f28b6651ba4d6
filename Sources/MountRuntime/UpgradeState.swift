import CLinuxSupport
import Glibc
import MountConfig
import MountCore

/// Everything of a running supervisor that an upgrade hands to the new binary across `execve`
/// (same process, same pid): the core's snapshot and the runtime's records. The descriptors the
/// records name stay open under the same numbers (their close-on-exec flag is cleared just
/// before the exec), so every worker keeps its pidfd, socketpair and output pipe.
///
/// It travels in a memfd named by `MOUNTSUP_UPGRADE_STATE`: the format number (4 bytes), then
/// the state in `StateCoder`'s binary form. The format is versioned: a binary reads only the
/// formats it knows, and `mountsupd --can-resume FORMAT` tells the old binary so before it gives
/// anything up.
struct UpgradeState: Codable {
  /// Format 2: durations as a value of their own (format 1: as a container), the machines in
  /// parts of their own.
  static let format = 2
  /// The formats this build can take over from.
  static let readableFormats: Set<Int> = [1, 2]
  static let environmentKey = "MOUNTSUP_UPGRADE_STATE"

  var format = Self.format
  /// The identity (release and commit) of the binary that handed over.
  var fromVersion: String
  /// When the upgrade was asked for, for "upgraded … in N ms".
  var requestedAt: MonotonicInstant
  var configuration: ConfigurationRecord
  var core: SupervisorCore.Snapshot
  var workers: [WorkerRecord]
  /// Exited workers whose output pipe a grandchild still holds.
  var orphanedOutputs: [WorkerRecord]
  var lastMountSites: [String: MountSiteRecord]
  var outputs: [String: OutputLog]
  var nextWorkerID: Int
  var control: ControlRecord
  var reload: ReloadCoordinator.Record
  /// FUSE connections handed over by kit workers: a crash after the upgrade is resumed too.
  var heldConnections: [HeldRecord]
  var startedAt: Double
  /// The file the daemon was first started from: the default of every later upgrade, whatever
  /// `--binary` an earlier one ran.
  var executablePath: String
  var upgrades: Int
  var hangCheckUnavailable: String?
  var saidKernelCannotResend: Bool
  /// The fanotify descriptor of mount events, kept open across the exec: closing it waits for
  /// an RCU grace period of the kernel's (20 ms and more), and the events of the gap wait in it.
  var mountEvents: Int32?

  /// The configuration that runs, without its mounts: each machine of the core carries its
  /// spec, so the specs travel once.
  struct ConfigurationRecord: Codable {
    var supervisor: SupervisorSettings
    /// Mounts the configuration no longer has, whose machines wait for their workers to go.
    var removed: Set<String>
    var files: [String]
    var dropInsWithoutMounts: [String]

    init(_ configuration: Configuration, core: SupervisorCore) {
      supervisor = configuration.supervisor
      let configured = Set(configuration.mounts.map(\.name))
      removed = Set(core.machines.keys.filter { !configured.contains($0) })
      files = configuration.files
      dropInsWithoutMounts = configuration.dropInsWithoutMounts
    }
  }

  /// The configuration that ran, its mounts taken from the machines.
  var runningConfiguration: Configuration {
    let specs = core.specs.filter { !configuration.removed.contains($0.name) }
    return Configuration(
      supervisor: configuration.supervisor, mounts: specs.sorted { $0.name < $1.name },
      files: configuration.files, dropInsWithoutMounts: configuration.dropInsWithoutMounts)
  }

  /// A worker with the numbers of its descriptors.
  struct WorkerRecord: Codable {
    var id: WorkerID
    var mount: String
    var pid: pid_t
    var pidfd: Int32
    var messages: Int32?
    var output: Int32?
    var notifySocket: Int32?
    var notifyAddress: String?
    var mountpoint: String
    var baseline: Set<UInt64>
    var mountID: UInt64?
    var lines: LineSplitter
  }

  struct HeldRecord: Codable {
    var mount: String
    var fuse: Int32
    var state: Int32?
    var initRequest: [UInt8]
    var mountID: UInt64?
  }

  struct MountSiteRecord: Codable {
    var mountpoint: String
    var baseline: Set<UInt64>
  }

  struct ControlRecord: Codable {
    var listener: Int32
    var path: String
    var ownFileDevice: UInt64?
    var ownFileInode: UInt64?
    /// The `mountctl upgrade` that asked: the new binary answers it.
    var requester: Int32?
  }

  /// Every descriptor the records name, which must survive the exec.
  var descriptors: [Int32] {
    let ofWorkers = (workers + orphanedOutputs).flatMap {
      [$0.pidfd, $0.messages, $0.output, $0.notifySocket].compactMap { $0 }
    }
    let held = heldConnections.flatMap { [$0.fuse] + [$0.state].compactMap { $0 } }
    return ofWorkers + held + [control.listener]
      + [control.requester, mountEvents].compactMap { $0 }
  }

  /// "formats 1 and 2", for messages.
  static var readableFormatsText: String {
    let sorted = readableFormats.sorted().map(String.init)
    return sorted.count == 1
      ? "format \(sorted[0])"
      : "formats \(sorted.dropLast().joined(separator: ", ")) and \(sorted.last!)"
  }

  /// Writes the state into a new memfd (kept open across exec) and returns it: the format, the
  /// number of parts and their lengths, then the parts. The first is the state without the
  /// core's machines, the others are the machines in runs, encoded at once on threads of their
  /// own: the machines are most of the state, and every mount waits while it is written.
  func write() throws(RuntimeError) -> Descriptor {
    let (rest, machines) = core.separatingMachines
    var without = self
    without.core = rest
    let runs = Self.runs(of: machines)
    var parts: [[UInt8]] = []
    do {
      var first: [UInt8] = []
      let others = try inParallel(runs.map { run in { try StateCoder.encode(run) } }) {
        first = try StateCoder.encode(without)
      }
      parts = [first] + others
    } catch {
      throw RuntimeError(.io, "cannot encode the state for the upgrade: \(error)")
    }
    var header: [UInt8] = []
    for word in [UInt64(format), UInt64(parts.count)] + parts.map({ UInt64($0.count) }) {
      withUnsafeBytes(of: UInt32(truncatingIfNeeded: word).littleEndian) {
        header.append(contentsOf: $0)
      }
    }
    let fd = Descriptor(
      try system(.descriptors, "memfd_create") { mountsup_memfd("mountsupd-upgrade") })
    for bytes in [header] + parts {
      var offset = 0
      while offset < bytes.count {
        offset += try system(.io, "write the upgrade state") {
          bytes.withUnsafeBytes { Glibc.write(fd.raw, $0.baseAddress! + offset, $0.count - offset) }
        }
      }
    }
    return fd
  }

  /// The machines in runs of about equal size, two at most: this machine's cores, and the
  /// state of a few mounts is not worth a thread.
  static func runs(of machines: [MountMachine]) -> [[MountMachine]] {
    guard machines.count >= 64 else { return machines.isEmpty ? [] : [machines] }
    let half = machines.count / 2
    return [Array(machines[..<half]), Array(machines[half...])]
  }

  /// Reads the state the old binary left in the memfd `fd` (and closes it).
  static func read(from fd: Int32) throws(RuntimeError) -> UpgradeState {
    let descriptor = Descriptor(fd)
    let size = try system(.io, "the size of the upgrade state") {
      lseek(descriptor.raw, 0, SEEK_END)
    }
    var bytes = [UInt8](repeating: 0, count: Int(size))
    var offset = 0
    while offset < bytes.count {
      let count = try system(.io, "read the upgrade state") {
        bytes.withUnsafeMutableBytes {
          pread(descriptor.raw, $0.baseAddress! + offset, $0.count - offset, off_t(offset))
        }
      }
      guard count > 0 else { break }
      offset += count
    }
    let words = Words(bytes)
    guard let found = words[0].map(Int.init) else {
      throw RuntimeError(.io, "the upgrade state is empty")
    }
    guard readableFormats.contains(found) else {
      throw RuntimeError(
        .io, "the upgrade state has format \(found); this build reads \(readableFormatsText)")
    }
    do {
      // Format 1: the state in one part.
      guard found > 1 else {
        return try StateCoder.decode(UpgradeState.self, from: Array(bytes[4...]))
      }
      guard let count = words[1].map(Int.init), count >= 1, count <= 64 else {
        throw StateCoder.corrupted([], "the number of parts is wrong")
      }
      var parts: [[UInt8]] = []
      var start = 8 + 4 * count
      for index in 0..<count {
        guard let length = words[2 + index].map(Int.init), start + length <= bytes.count else {
          throw StateCoder.corrupted([], "the state is cut short")
        }
        parts.append(Array(bytes[start..<start + length]))
        start += length
      }
      guard start == bytes.count else { throw StateCoder.corrupted([], "bytes left over") }
      var state: UpgradeState?
      let runs = try inParallel(
        parts.dropFirst().map { part in { try StateCoder.decode([MountMachine].self, from: part) } }
      ) {
        state = try StateCoder.decode(UpgradeState.self, from: parts[0])
      }
      guard var state else { throw StateCoder.corrupted([], "no state") }
      state.core = state.core.joining(runs.flatMap { $0 })
      return state
    } catch {
      throw RuntimeError(.io, "the upgrade state cannot be decoded: \(error)")
    }
  }

  /// The little-endian 32-bit words at the start of the state; nil past its end.
  private struct Words {
    let bytes: [UInt8]
    init(_ bytes: [UInt8]) { self.bytes = bytes }
    subscript(index: Int) -> UInt32? {
      let at = index * 4
      guard at + 4 <= bytes.count else { return nil }
      return UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16
        | UInt32(bytes[at + 3]) << 24
    }
  }
}
