import { mkdirSync, mkdtempSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { PathError, resolveInside } from '../../src/util/paths';

describe('resolveInside', () => {
  let root: string;
  let outside: string;
  beforeAll(() => {
    const base = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'loki-paths-')));
    root = path.join(base, 'ws');
    outside = path.join(base, 'outside');
    mkdirSync(path.join(root, 'docs'), { recursive: true });
    mkdirSync(outside);
    writeFileSync(path.join(root, 'docs', 'prd.md'), '# PRD');
    writeFileSync(path.join(outside, 'secret.txt'), 'secret');
    symlinkSync(path.join(outside, 'secret.txt'), path.join(root, 'link-out.md'));
    symlinkSync(outside, path.join(root, 'dir-out'));
    symlinkSync(path.join(root, 'docs', 'prd.md'), path.join(root, 'link-in.md'));
    writeFileSync(path.join(root, "a b'; rm -rf ~; $(touch pwned).md"), 'x');
  });

  it('resolves a file inside the root', () => {
    expect(resolveInside(root, 'docs/prd.md')).toBe(path.join(root, 'docs', 'prd.md'));
    expect(resolveInside(root, './docs/../docs/prd.md')).toBe(path.join(root, 'docs', 'prd.md'));
  });

  it('follows a symlink that stays inside', () => {
    expect(resolveInside(root, 'link-in.md')).toBe(path.join(root, 'docs', 'prd.md'));
  });

  it('treats shell metacharacters as plain file-name characters', () => {
    expect(resolveInside(root, "a b'; rm -rf ~; $(touch pwned).md")).toBe(path.join(root, "a b'; rm -rf ~; $(touch pwned).md"));
  });

  it.each([
    ['../outside/secret.txt', 'path escapes its root: ../outside/secret.txt'],
    ['docs/../../outside/secret.txt', 'path escapes its root: docs/../../outside/secret.txt'],
    ['/etc/passwd', 'path escapes its root: /etc/passwd'],
    ['link-out.md', 'path escapes its root: link-out.md'],
    ['dir-out/secret.txt', 'path escapes its root: dir-out/secret.txt'],
    ['a\0b', 'path contains a NUL byte'],
    ['', 'path is empty'],
    ['docs/missing.md', 'path does not exist: docs/missing.md'],
  ])('refuses %j', (rel, message) => {
    expect(() => resolveInside(root, rel)).toThrow(new PathError(message));
  });

  it('checks the nearest existing parent when the target need not exist', () => {
    expect(resolveInside(root, 'docs/new.md', { mustExist: false })).toBe(path.join(root, 'docs', 'new.md'));
    expect(() => resolveInside(root, 'dir-out/new.md', { mustExist: false })).toThrow(PathError);
  });
});
