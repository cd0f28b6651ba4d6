import Foundation
import PackagePlugin

/// Writes the git commit the package is built from into `BuildIdentity.swift` of the target,
/// before every build, so that `mountsupd --version`, `mountctl --version` and an upgrade's log
/// name the exact build. The file is rewritten only when the commit changes; outside a git
/// checkout the commit is "unknown".
@main struct BuildIdentity: BuildToolPlugin {
  func createBuildCommands(context: PluginContext, target: Target) throws -> [Command] {
    let output = context.pluginWorkDirectoryURL.appending(path: "BuildIdentity.swift")
    let script = """
      commit=$(git -C "$1" rev-parse --short=12 HEAD 2>/dev/null) || commit=unknown
      if [ "$commit" != unknown ] && [ -n "$(git -C "$1" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit-modified"
      fi
      text="/// The git commit of this build (see Plugins/BuildIdentity).
      let buildCommit = \\"$commit\\""
      [ "$(cat "$2" 2>/dev/null)" = "$text" ] || printf '%s\\n' "$text" > "$2"
      """
    return [
      .prebuildCommand(
        displayName: "Build identity: the git commit", executable: URL(filePath: "/bin/sh"),
        arguments: ["-c", script, "sh", context.package.directoryURL.path, output.path],
        outputFilesDirectory: context.pluginWorkDirectoryURL)
    ]
  }
}
