/** Billing state contracts, the reducer and its effects. */
export * from './state';
export * from './effects';
export * from './reducer';
export * from './current-subscription';
export * from './access';
