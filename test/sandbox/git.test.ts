import { describe, expect, it } from 'vitest';
import { GitError, sessionBranchName } from '../../src/sandbox/git';

describe('sessionBranchName', () => {
  it('names loki/session-<id> and refuses ids that cannot safely name a branch', () => {
    expect(sessionBranchName('ses_0123abcd')).toBe('loki/session-ses_0123abcd');
    for (const bad of ['../x', 'a b', '-x', '', 'a/b', 'x'.repeat(129)]) {
      expect(() => sessionBranchName(bad)).toThrow(GitError);
    }
    expect(() => sessionBranchName('../x')).toThrow('session id "../x" cannot name a branch');
  });
});
