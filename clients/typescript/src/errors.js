// The error every transport raises when the server refuses or speaks out of turn.

/** The server refused (`code` is the protocol's error code), or spoke out of turn. */
export class VigilError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
  }
}
