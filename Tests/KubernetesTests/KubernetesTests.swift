import Foundation
import MountSupTestSupport
import Testing

@Suite("deploy/kubernetes: the manifests")
struct ManifestTests {
  let manifests = ["mountsup.yaml", "consumer.yaml"].map {
    "\(packageDirectory)/deploy/kubernetes/\($0)"
  }

  @Test("valid against the Kubernetes schemas (kubernetes-validate --strict, from PyPI)")
  func validAgainstTheSchemas() async throws {
    let run = try await runProgram(["kubernetes-validate", "--strict"] + manifests)
    #expect(run.status == 0, "kubernetes-validate (scripts/setup.sh installs it):\n\(run.output)")
    for resource in ["configmap/mountsup-config", "daemonset/mountsup", "pod/mountsup-consumer"] {
      #expect(run.output.contains("passed for resource \(resource)"), "\(run.output)")
    }
  }

  @Test("the ConfigMap's mounts.toml is a valid configuration; the probes are mountctl's")
  func configurationAndProbes() async throws {
    let directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("mountsup-manifest-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let extract = """
      import json, sys, yaml
      documents = list(yaml.safe_load_all(open(sys.argv[1])))
      config = next(d for d in documents if d["kind"] == "ConfigMap")["data"]["mounts.toml"]
      open(sys.argv[2], "w").write(config)
      daemon = next(d for d in documents if d["kind"] == "DaemonSet")
      container = daemon["spec"]["template"]["spec"]["containers"][0]
      consumer = yaml.safe_load(open(sys.argv[3]))
      print(json.dumps({
          "readiness": container["readinessProbe"]["exec"]["command"],
          "liveness": container["livenessProbe"]["exec"]["command"],
          "init": consumer["spec"]["initContainers"][0]["command"],
          "propagation": [m.get("mountPropagation") for m in container["volumeMounts"]],
      }))
      """
    let config = directory + "/mounts.toml"
    let extracted = try await runProgram(
      ["python3", "-c", extract, manifests[0], config, manifests[1]])
    try #require(extracted.status == 0, "\(extracted.output)")
    struct Probes: Decodable {
      var readiness: [String]
      var liveness: [String]
      var `init`: [String]
      var propagation: [String?]
    }
    let probes = try JSONDecoder().decode(Probes.self, from: Data(extracted.output.utf8))
    #expect(probes.readiness == ["mountctl", "status", "--required"])
    #expect(probes.liveness == ["mountctl", "metrics"])
    #expect(probes.`init`.prefix(3) == ["mountctl", "wait-ready", "demo"])
    #expect(probes.propagation.contains("Bidirectional"))

    let check = try await runProgram([
      "\(binDirectory)/mountsupd", "--check-config", "--config", config,
    ])
    #expect(check.status == 0, "mountsupd --check-config of the ConfigMap:\n\(check.output)")
  }
}

/// `podman kube play` of the DaemonSet's pod and the consumer, for real (scripts/kube-e2e.py):
/// readiness, mounts on the host and in the consumer, a killed worker, a ConfigMap change.
///
/// Where podman cannot run (not root, not installed, no /dev/fuse) the test is skipped with the
/// reason printed: it never passes without having run.
@Suite struct KubePlayE2ETests {
  static let script = "\(packageDirectory)/scripts/kube-e2e.py"

  static func machineCanRun() async -> Bool {
    guard let check = try? await runProgram(["python3", script, "--check"]) else {
      print("SKIPPED: cannot run \(script)")
      return false
    }
    if check.status != 0 { print(check.output, terminator: "") }
    return check.status == 0
  }

  @Test(
    "the DaemonSet and a consumer under podman kube play",
    .enabled("needs root, podman (scripts/setup.sh) and /dev/fuse") { await machineCanRun() },
    .timeLimit(.minutes(15)))
  func kubePlay() async throws {
    let run = try await runProgram(["python3", Self.script])
    print(run.output, terminator: "")
    if run.status == 77 {
      try Test.cancel("podman cannot run here (see the output above)")
    }
    #expect(run.status == 0, "scripts/kube-e2e.py failed; its output is above")
  }
}
