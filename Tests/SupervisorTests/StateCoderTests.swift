import Foundation
import MountConfig
import MountCore
import Testing

@testable import MountRuntime

/// The binary form of an upgrade's state: what goes in comes out, whatever the shape.
@Suite struct StateCoderTests {
  struct Sample: Codable, Equatable {
    enum Kind: Codable, Equatable {
      case plain
      case labelled(pid: Int32, since: MonotonicInstant)
      case unlabelled(String, [UInt64])
    }
    var name: String
    var empty: String
    var optional: Int?
    var missing: Int32?
    var flags: [Bool]
    var kinds: [Kind]
    var table: [String: [String]]
    var set: Set<UInt64>
    var duration: Duration
    var number: Double
    var small: Int8
    var big: UInt64
    var nested: [Sample]
  }

  func roundTrip<T: Codable>(_ value: T) throws -> T {
    try StateCoder.decode(T.self, from: StateCoder.encode(value))
  }

  @Test func everyShapeComesBackTheSame() throws {
    let inner = Sample(
      name: "inner ü ✓", empty: "", optional: nil, missing: nil, flags: [], kinds: [.plain],
      table: [:], set: [], duration: .zero, number: -0.5, small: -128, big: 0, nested: [])
    let sample = Sample(
      name: "outer", empty: "", optional: -42, missing: nil, flags: [true, false, true],
      kinds: [
        .plain, .labelled(pid: 4242, since: MonotonicInstant(nanoseconds: 1 << 62)),
        .unlabelled("x", [1, .max]),
      ],
      table: ["a": ["1", "2"], "": [], "c d": [""]], set: [3, 1, 2], duration: .milliseconds(1500),
      number: 3.25, small: 127, big: .max, nested: [inner, inner])
    #expect(try roundTrip(sample) == sample)
  }

  @Test func aCoreSnapshotComesBackTheSame() throws {
    var spec = MountSpec(
      name: "photos", mountpoint: "/mnt/photos", command: ["w", "{mountpoint}"],
      environment: ["A": "1"])
    spec.hangTimeout = .seconds(5)
    var core = SupervisorCore(specs: [
      spec, MountSpec(name: "b", mountpoint: "/mnt/b", command: ["w"]),
    ])
    let now = MonotonicInstant(nanoseconds: 5_000_000_000_000)
    _ = core.begin(now: now)
    _ = core.handle(.mountpointInspected(attempt: 1, .empty), for: "photos", now: now)
    let decoded = try roundTrip(core.snapshot)
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    #expect(try encoder.encode(decoded) == encoder.encode(core.snapshot))
    let restored = SupervisorCore(snapshot: decoded)
    #expect(restored.machines["photos"]?.phase == core.machines["photos"]?.phase)
    #expect(restored.order == core.order)
  }

  @Test func aStateOfManyMountsCrossesInPartsAndComesBackWhole() throws {
    let specs = (0..<100).map {
      MountSpec(name: "m\($0)", mountpoint: "/mnt/m\($0)", command: ["w", "{mountpoint}"])
    }
    var core = SupervisorCore(specs: specs)
    let now = MonotonicInstant(nanoseconds: 5_000_000_000_000)
    _ = core.begin(now: now)
    let configuration = Configuration(
      supervisor: SupervisorSettings(), mounts: specs, files: ["/etc/mountsup/mounts.toml"],
      dropInsWithoutMounts: [])
    let state = UpgradeState(
      fromVersion: "0.3.0", requestedAt: now,
      configuration: .init(configuration, core: core), core: core.snapshot, workers: [],
      orphanedOutputs: [], lastMountSites: [:], outputs: [:], nextWorkerID: 7,
      control: .init(listener: 3, path: "/run/mountsup/control.sock"),
      reload: .init(
        due: false, settlingAnnounced: false, remaining: [], appliedCount: 2, failedCount: 1),
      heldConnections: [], startedAt: 1.5, executablePath: "/usr/sbin/mountsupd", upgrades: 3,
      hangCheckUnavailable: nil, saidKernelCannotResend: false, mountEvents: nil)
    #expect(UpgradeState.runs(of: core.snapshot.separatingMachines.machines).count == 2)
    let file = try state.write()
    let back = try UpgradeState.read(from: dup(file.raw))
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    #expect(try encoder.encode(back.core) == encoder.encode(state.core))
    #expect(back.core.specs.map(\.name) == state.core.specs.map(\.name))
    #expect(back.core.specs.count == specs.count)
    #expect(back.nextWorkerID == 7 && back.upgrades == 3 && back.reload.appliedCount == 2)
  }

  /// Format 1 wrote a `Duration` by its own `Codable` form; format 2 as a value of its own.
  struct WithDuration<Field: Codable>: Codable { var timeout: Field }
  struct DurationAsFormat1: Codable {
    var duration: Duration
    func encode(to encoder: any Encoder) throws { try duration.encode(to: encoder) }
  }

  @Test func durationsAreOneValueAndFormat1sContainersAreStillRead() throws {
    let duration = Duration.milliseconds(2500) + .nanoseconds(7)
    let compact = try StateCoder.encode(WithDuration(timeout: duration))
    let format1 = try StateCoder.encode(
      WithDuration(timeout: DurationAsFormat1(duration: duration)))
    #expect(compact.count < format1.count)
    for bytes in [compact, format1] {
      #expect(try StateCoder.decode(WithDuration<Duration>.self, from: bytes).timeout == duration)
    }
    #expect(Supervisor.canResume(format: 1) && Supervisor.canResume(format: 2))
    #expect(!Supervisor.canResume(format: 3))
  }

  @Test func damagedInputIsAnErrorNotACrash() throws {
    var bytes = try StateCoder.encode(["a": "b"])
    bytes[0] = 99
    #expect(throws: DecodingError.self) {
      try StateCoder.decode([String: String].self, from: bytes)
    }
    #expect(throws: DecodingError.self) {
      try StateCoder.decode(Int.self, from: StateCoder.encode("text"))
    }
    let whole = try StateCoder.encode(["key": ["a", "b"]])
    for length in 0..<whole.count {
      #expect(throws: (any Error).self) {
        try StateCoder.decode([String: [String]].self, from: Array(whole.prefix(length)))
      }
    }
  }
}
