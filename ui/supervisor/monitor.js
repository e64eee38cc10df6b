// Placeholder until its owner commits this module (see /tmp/briefs/ui-contract.md).
export {};
