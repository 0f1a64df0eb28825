/**
 * The Node implementation of the `SessionValidator` port: the checks that need
 * the host file system, done before a session is queued.
 *
 * - the workspace's real path lies inside the real path of one of
 *   `LOKI_WORKSPACE_ROOTS` and is a directory;
 * - the PRD resolves inside the workspace through `resolveInside` (symlinks
 *   followed, so a link pointing out is refused) and is a regular file;
 * - the workspace's `.loki/config.yaml` is valid; it is read here, once, and merged
 *   under the operator policy into the session's effective policy (the only time
 *   any workspace file decides anything, and it can only narrow the operator's).
 */
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import type { SessionValidator } from '../http/context';
import { ApiError, ErrorCode } from '../http/errors';
import { loadWorkspaceConfig, SandboxConfigError } from '../sandbox/config';
import { SandboxPolicyError, validateHostMount } from '../sandbox/policy';
import { providerPreset } from '../sandbox/providers';
import { canonicalPolicyJson, effectiveSessionPolicy, type OperatorPolicy, PolicyViolation, policySha256 } from '../sandbox/session-policy';
import { isInside, PathError, resolveInside } from '../util/paths';
import { checkSessionPaths } from './service';

export interface NodeSessionValidatorOptions {
  /** `LOKI_WORKSPACE_ROOTS` (absolute). Roots that do not exist are skipped. */
  roots: readonly string[];
  /** Home directory for `~` in the workspace config's mounts. */
  home: string;
  /** The operator's policy, loaded at start-up. */
  operator: OperatorPolicy;
  /** `LOKI_SANDBOX_MODE`. */
  forceSandbox?: boolean;
  lokiHome?: string;
  dockerSocket?: string;
}

function invalidPath(message: string): never {
  throw new ApiError(400, ErrorCode.invalidPath, message);
}

function realRoots(roots: readonly string[]): string[] {
  const out: string[] = [];
  for (const r of roots) {
    try {
      out.push(realpathSync(r));
    } catch {
      // a root that does not exist (yet) admits nothing
    }
  }
  return out;
}

export function createNodeSessionValidator(opts: NodeSessionValidatorOptions): SessionValidator {
  return {
    async validate(workspace, prd, request) {
      checkSessionPaths(workspace, prd);
      let realWorkspace: string;
      try {
        realWorkspace = realpathSync(workspace);
      } catch {
        invalidPath(`workspace does not exist: ${workspace}`);
      }
      if (!statSync(realWorkspace).isDirectory()) invalidPath(`workspace is not a directory: ${workspace}`);
      const roots = realRoots(opts.roots);
      if (!roots.some((root) => isInside(root, realWorkspace))) {
        const allowed = opts.roots.length ? opts.roots.join(', ') : 'none';
        invalidPath(
          `workspace ${workspace} is outside the allowed roots (${allowed}); set LOKI_WORKSPACE_ROOTS on the server to comma-separated absolute directories that include it, and restart the server`,
        );
      }
      // The control plane's own state (token database, signing keys) never goes into a session.
      const lokiHome = opts.lokiHome ? realRoots([opts.lokiHome])[0] : undefined;
      if (lokiHome && isInside(realWorkspace, lokiHome)) {
        invalidPath(`workspace ${workspace} contains the server's state directory (LOKI_HOME ${opts.lokiHome}); use a project directory instead`);
      }
      // Nor a directory inside it (LOKI_HOME/dashboard holds loki.db and the audit signing keys).
      if (lokiHome && isInside(lokiHome, realWorkspace)) {
        invalidPath(`workspace ${workspace} is inside the server's state directory (LOKI_HOME ${opts.lokiHome}); use a project directory instead`);
      }
      // Nor what the sandbox never mounts (~/.ssh, ~/.aws, the home itself, …): the workspace
      // is copied into the agent's worktree and its PRD becomes the agent's prompt.
      try {
        const ctx = { home: opts.home, lokiHome: opts.lokiHome, dockerSocket: opts.dockerSocket, sessionId: '', workerId: '', workspace: '', prd: '', env: {} };
        validateHostMount(realWorkspace, ctx, `workspace ${workspace}`);
      } catch (err) {
        if (err instanceof SandboxPolicyError) invalidPath(err.message.replace(/^mount /, ''));
        throw err;
      }

      let realPrd: string;
      try {
        realPrd = resolveInside(realWorkspace, prd);
      } catch (err) {
        if (err instanceof PathError) {
          invalidPath(/escapes/.test(err.message) ? `prd escapes the workspace: ${prd}` : `prd does not exist in the workspace: ${prd}`);
        }
        throw err;
      }
      if (realPrd === realWorkspace || !statSync(realPrd).isFile()) invalidPath(`prd is not a regular file: ${prd}`);

      let config: ReturnType<typeof loadWorkspaceConfig>;
      try {
        config = loadWorkspaceConfig(realWorkspace, { home: opts.home });
      } catch (err) {
        if (err instanceof SandboxConfigError) throw new ApiError(400, ErrorCode.validation, err.message);
        throw err;
      }
      if (request.provider) config = { ...config, provider: { command: providerPreset(request.provider) } };
      let policy: ReturnType<typeof effectiveSessionPolicy>;
      try {
        policy = effectiveSessionPolicy({
          config,
          operator: opts.operator,
          requestedSandbox: request.sandbox,
          workspace: realWorkspace,
          forceSandbox: opts.forceSandbox === true,
          mountContext: { home: opts.home, lokiHome: opts.lokiHome, dockerSocket: opts.dockerSocket },
        });
      } catch (err) {
        if (err instanceof PolicyViolation) throw new ApiError(err.status, ErrorCode.policyViolation, err.message);
        throw err;
      }
      return {
        workspace: realWorkspace,
        prd: path.posix.normalize(prd.split(path.sep).join('/')),
        policy,
        policyJson: canonicalPolicyJson(policy),
        policySha256: policySha256(policy),
      };
    },
  };
}
