// swift-tools-version:6.0
import PackageDescription

let package = Package(
  name: "MountSupervisor",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "mountsupd", targets: ["mountsupd"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
  ],
  targets: [
    // MARK: C libraries and the spawn shim
    .systemLibrary(
      name: "CFuse3", pkgConfig: "fuse3",
      providers: [.apt(["libfuse3-dev"])]),
    .systemLibrary(
      name: "CSystemd", pkgConfig: "libsystemd",
      providers: [.apt(["libsystemd-dev"])]),
    .target(name: "CLinuxSupport"),

    // MARK: Supervisor: config → pure core → Linux runtime → daemon
    .target(
      name: "MountConfig",
      dependencies: [.product(name: "TOMLKit", package: "TOMLKit")]),
    .target(name: "MountCore", dependencies: ["MountConfig"]),
    .target(
      name: "MountRuntime",
      dependencies: [
        "MountConfig", "MountCore", "CLinuxSupport", "CSystemd",
        .product(name: "Logging", package: "swift-log"),
      ]),
    .executableTarget(
      name: "mountsupd",
      dependencies: [
        "MountConfig", "MountRuntime",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "Logging", package: "swift-log"),
      ]),

    // MARK: Workers: the kit, the built-in mirror, and the test fixture worker
    .executableTarget(name: "mountsup-testworker", dependencies: ["CFuse3"]),

    // MARK: Tests
    .testTarget(name: "MountConfigTests", dependencies: ["MountConfig"]),
    .testTarget(name: "MountCoreTests", dependencies: ["MountCore"]),
    .testTarget(
      name: "SupervisorTests",
      dependencies: [
        "MountRuntime", "CLinuxSupport", "mountsupd", "mountsup-testworker",
      ]),
  ]
)
