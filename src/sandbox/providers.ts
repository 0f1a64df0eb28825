/**
 * Agent presets: `--provider claude|codex|gemini` (or `provider: {name: …}` in the
 * workspace config) pick an argv that runs the agent unattended inside the sandbox.
 * The prompt is built from the PRD's content, never its file name, and is substituted
 * for `{prompt}` as one whole argument. Cost comes from the agents' own JSON output
 * (`total_cost_usd` on Claude Code's result line; see `budget.ts`).
 *
 * Unattended means no permission prompts: the sandbox (read-only root, no network
 * but the session's egress proxy, its own worktree) is what bounds the agent.
 */
export const PROMPT_PLACEHOLDER = '{prompt}';

export const PROVIDER_NAMES = ['claude', 'codex', 'gemini'] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

const PRESETS: Record<ProviderName, readonly string[]> = {
  // Print mode, JSON lines (the result line carries total_cost_usd), no prompts.
  claude: ['claude', '-p', PROMPT_PLACEHOLDER, '--output-format', 'stream-json', '--verbose', '--dangerously-skip-permissions'],
  // Non-interactive exec with JSON events; the container is the sandbox.
  codex: ['codex', 'exec', '--json', '--skip-git-repo-check', '--dangerously-bypass-approvals-and-sandbox', PROMPT_PLACEHOLDER],
  // Headless prompt, JSON output, approvals off.
  gemini: ['gemini', '--prompt', PROMPT_PLACEHOLDER, '--output-format', 'json', '--yolo'],
};

export function isProviderName(v: unknown): v is ProviderName {
  return typeof v === 'string' && (PROVIDER_NAMES as readonly string[]).includes(v);
}

/** The preset argv of a provider. */
export function providerPreset(name: ProviderName): string[] {
  return [...PRESETS[name]];
}

/** The largest PRD that becomes a prompt (one argv element may not exceed 128 KiB on Linux). */
export const MAX_PROMPT_PRD_BYTES = 96 * 1024;

/** The prompt for a PRD: what to do, where the work goes, and the PRD itself. */
export function buildPrompt(prdPath: string, content: string): string {
  return [
    `You are working in /workspace, a private copy of a repository. Implement the product requirements document below (it is also in the file ${prdPath}).`,
    'Work until it is done: write the code and its tests, run the tests, and fix what fails. Do not ask questions; make reasonable decisions and note them.',
    'Everything you change in /workspace is committed for review when you finish; do not commit or push yourself.',
    '',
    '--- PRD ---',
    content.trimEnd(),
    '--- end of PRD ---',
  ].join('\n');
}
