/** Fixture envelopes re-keyed per test so ids never collide across tests or workflows (support/fixtures.ts). */
export { uniqueFixture } from '../../support/fixtures';
