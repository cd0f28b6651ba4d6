import CLinuxSupport
import Foundation
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
  /// Format 2: durations as a value of their own (format 1: as a container).
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
    return ofWorkers + held + [control.listener] + [control.requester].compactMap { $0 }
  }

  /// "formats 1 and 2", for messages.
  static var readableFormatsText: String {
    let sorted = readableFormats.sorted().map(String.init)
    return sorted.count == 1
      ? "format \(sorted[0])"
      : "formats \(sorted.dropLast().joined(separator: ", ")) and \(sorted.last!)"
  }

  /// Writes the state into a new memfd (kept open across exec) and returns it.
  func write() throws(RuntimeError) -> Descriptor {
    var bytes: [UInt8] = []
    withUnsafeBytes(of: UInt32(format).littleEndian) { bytes.append(contentsOf: $0) }
    do {
      bytes += try StateCoder.encode(self)
    } catch {
      throw RuntimeError(.io, "cannot encode the state for the upgrade: \(error)")
    }
    let fd = Descriptor(
      try system(.descriptors, "memfd_create") { mountsup_memfd("mountsupd-upgrade") })
    var offset = 0
    while offset < bytes.count {
      offset += try system(.io, "write the upgrade state") {
        bytes.withUnsafeBytes { Glibc.write(fd.raw, $0.baseAddress! + offset, $0.count - offset) }
      }
    }
    return fd
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
    guard bytes.count >= 4 else { throw RuntimeError(.io, "the upgrade state is empty") }
    let found = Int(
      UInt32(bytes[0]) | UInt32(bytes[1]) << 8 | UInt32(bytes[2]) << 16 | UInt32(bytes[3]) << 24)
    guard readableFormats.contains(found) else {
      throw RuntimeError(
        .io, "the upgrade state has format \(found); this build reads \(readableFormatsText)")
    }
    do {
      return try StateCoder.decode(UpgradeState.self, from: Array(bytes[4...]))
    } catch {
      throw RuntimeError(.io, "the upgrade state cannot be decoded: \(error)")
    }
  }
}
