/** Agent presets: exact argv, prompts built from the PRD's content, and the config/API wiring. */
import { describe, expect, it } from 'vitest';
import { providerArgv, SandboxConfigError, workspaceConfigFromObject } from '../../src/sandbox/config';
import { buildPrompt, isProviderName, providerPreset } from '../../src/sandbox/providers';

const ctx = { workspaceDir: '/ws', home: '/home/u' };

describe('provider presets', () => {
  it('each preset runs its agent unattended, with the prompt as one whole argument', () => {
    expect(providerPreset('claude')).toEqual(['claude', '-p', '{prompt}', '--output-format', 'stream-json', '--verbose', '--dangerously-skip-permissions']);
    expect(providerPreset('codex')).toEqual(['codex', 'exec', '--json', '--skip-git-repo-check', '--dangerously-bypass-approvals-and-sandbox', '{prompt}']);
    expect(providerPreset('gemini')).toEqual(['gemini', '--prompt', '{prompt}', '--output-format', 'json', '--yolo']);
    expect(isProviderName('claude')).toBe(true);
    expect(isProviderName('bash')).toBe(false);
  });

  it('the prompt carries the PRD content (not only its name); a hostile PRD stays one argument', () => {
    const content = "# Build it\n$(touch /tmp/pwned); `rm -rf ~`; ' \" \\\n";
    const prompt = buildPrompt('docs/prd.md', content);
    expect(prompt).toContain('(it is also in the file docs/prd.md)');
    expect(prompt).toContain(`--- PRD ---\n${content.trimEnd()}\n--- end of PRD ---`);
    const argv = providerArgv(providerPreset('claude'), 'docs/prd.md', prompt);
    expect(argv).toEqual(['claude', '-p', prompt, '--output-format', 'stream-json', '--verbose', '--dangerously-skip-permissions']);
  });

  it('provider.name in the workspace config picks the preset; name and command together are refused', () => {
    expect(workspaceConfigFromObject({ provider: { name: 'gemini' } }, ctx).provider.command).toEqual(providerPreset('gemini'));
    expect(() => workspaceConfigFromObject({ provider: { name: 'gemini', command: ['x'] } }, ctx)).toThrow(
      new SandboxConfigError('.loki/config.yaml: provider: give provider.name or provider.command, not both'),
    );
    expect(() => workspaceConfigFromObject({ provider: { name: 'bash' } }, ctx)).toThrow(
      new SandboxConfigError('.loki/config.yaml: provider.name: expected one of claude, codex, gemini'),
    );
  });

  it('{prompt}, like {prd}, must be a whole argument', () => {
    expect(() => workspaceConfigFromObject({ provider: { command: ['agent', '--task={prompt}'] } }, ctx)).toThrow(
      new SandboxConfigError('.loki/config.yaml: provider.command.1: {prompt} must be a whole argument, not part of "--task={prompt}"'),
    );
    expect(providerArgv(['agent', '{prompt}', '{prd}'], 'p.md')).toEqual(['agent', '{prompt}', 'p.md']);
  });
});
