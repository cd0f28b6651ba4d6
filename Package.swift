// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "MountSupervisor",
  // Linux only: everything imports Glibc and uses Linux interfaces (pidfd, signalfd, epoll,
  // /proc/self/mountinfo, FUSE). No `platforms:` line, since none of Apple's platforms applies.
  products: [
    .executable(name: "mountsupd", targets: ["mountsupd"]),
    .executable(name: "mountctl", targets: ["mountctl"]),
    .library(name: "MountWorkerKit", targets: ["MountWorkerKit"]),
    .executable(name: "mountsup-mirror", targets: ["mountsup-mirror"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    // The Prometheus text format of the daemon's metrics (docs/metrics.md).
    .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
  ],
  targets: [
    // MARK: C libraries and the spawn shim
    .systemLibrary(
      name: "CFuse3", pkgConfig: "fuse3",
      providers: [.apt(["libfuse3-dev"])]),
    // libsystemd (libsystemd-dev), loaded when the environment says systemd started us.
    .target(name: "CSystemd"),
    .target(name: "CLinuxSupport"),

    // MARK: Supervisor: config → pure core → Linux runtime → daemon
    // The duration format ("500ms", "1m30s") of the configuration and of mountctl's options.
    .target(name: "MountDuration"),
    // The TOML parser is its own (MountConfig/TOML): no Foundation in the daemon.
    .target(name: "MountConfig", dependencies: ["MountDuration"]),
    .target(
      name: "MountCore",
      dependencies: ["MountConfig", .product(name: "HeapModule", package: "swift-collections")]),
    .target(
      name: "MountRuntime",
      dependencies: [
        "MountConfig", "MountCore", "MountControl", "CLinuxSupport", "CSystemd",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "Prometheus", package: "swift-prometheus"),
      ]),
    .executableTarget(
      name: "mountsupd",
      dependencies: [
        "MountConfig", "MountControl", "MountRuntime",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ]),

    // MARK: Control: the socket protocol shared by the daemon and `mountctl`
    .target(name: "MountControl", plugins: ["BuildIdentity"]),
    // The git commit of the build, for --version and the upgrade's log.
    .plugin(name: "BuildIdentity", capability: .buildTool()),
    .executableTarget(
      name: "mountctl",
      dependencies: [
        "MountControl", "MountDuration",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),

    // MARK: Workers: the kit, the built-in mirror, and the test fixture worker
    .target(name: "CMountWorkerKitSupport", dependencies: ["CFuse3"]),
    .target(name: "MountWorkerKit", dependencies: ["CFuse3", "CMountWorkerKitSupport"]),
    .executableTarget(
      name: "mountsup-mirror",
      dependencies: [
        "MountWorkerKit", "CMountWorkerKitSupport",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    .testTarget(
      name: "MirrorTests",
      dependencies: ["MountWorkerKit", "CMountWorkerKitSupport", "mountsup-mirror"]),
    .executableTarget(name: "mountsup-testworker", dependencies: ["CFuse3"]),

    // MARK: Tests
    .testTarget(
      name: "MountConfigTests", dependencies: ["MountConfig", "MountDuration", "MountControl"]),
    .testTarget(name: "MountCoreTests", dependencies: ["MountCore"]),
    // The harness of the tests that run mountsupd: sandboxes, the mount table, processes, a
    // NOTIFY_SOCKET, the daemon itself.
    .target(name: "MountSupTestSupport", path: "Tests/TestSupport"),
    .testTarget(
      name: "SupervisorTests",
      dependencies: [
        "CLinuxSupport", "MountSupTestSupport", "mountsupd", "mountctl", "mountsup-testworker",
        "mountsup-mirror", "MountRuntime",
      ]),
    .testTarget(
      name: "ControlTests",
      dependencies: [
        "MountControl", "MountSupTestSupport", "mountsupd", "mountctl", "mountsup-testworker",
      ]),
    .testTarget(
      name: "SystemdE2ETests",
      dependencies: [
        "MountSupTestSupport", "mountsupd", "mountctl", "mountsup-mirror", "mountsup-testworker",
      ]),
    // deploy/kubernetes: the manifests against the Kubernetes schemas, and played for real with
    // podman (scripts/kube-e2e.py).
    .testTarget(
      name: "KubernetesTests",
      dependencies: ["MountSupTestSupport", "mountsupd", "mountctl", "mountsup-mirror"]),
    .testTarget(
      name: "ThirdPartyTests",
      dependencies: ["CLinuxSupport", "MountSupTestSupport", "mountsupd", "mountsup-testworker"]),
  ]
)
