// What the page tells its user when something fails: plain words, no setting names, no
// upstream error text (that goes to the browser console for whoever debugs).

/** An HTTP error of the API: its status, its JSON `error` text and its Retry-After (s). */
export class ApiError extends Error {
  constructor(status, message, retryAfter) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** Seconds of a Retry-After header (null when absent or a date). */
export function retryAfterOf(response) {
  const value = Number.parseInt(response.headers.get("retry-after") || "", 10);
  return Number.isFinite(value) && value >= 0 ? value : null;
}

/**
 * Why a message could not be sent, for its user: {text, wait} where `wait` is the number of
 * seconds before a retry can succeed (null when it can be retried at once).
 */
export function whyNotSent(error) {
  if (!(error instanceof ApiError)) {
    return { text: "Cannot reach the server. Check your connection, then retry.", wait: null };
  }
  const wait = error.retryAfter;
  switch (error.status) {
    case 429:
      return /at once/.test(error.message)
        ? { text: "Too many of your answers are being written at once.", wait: wait ?? 5 }
        : { text: "You are sending messages too quickly.", wait: wait ?? 5 };
    case 403:
      return wait !== null
        ? { text: "Sending is paused for a while after too many refused messages.", wait }
        : { text: "The server refused this message (the page may be out of date: reload it).", wait: null };
    case 413: {
      const most = /at most (\d+)/.exec(error.message);
      return {
        text: most ? `This message is too long: at most ${Number(most[1]).toLocaleString()} characters.` : "This message is too long.",
        wait: null,
        final: true,
      };
    }
    case 400:
      return { text: "This model cannot be used right now. Choose another one, then retry.", wait: null };
    case 422:
      return { text: "This message cannot be sent as it is.", wait: null, final: true };
    case 409:
    case 502:
    case 503:
    case 504:
      return { text: "The server is busy or restarting.", wait: wait ?? 2 };
    default:
      return { text: "Something went wrong on the server.", wait: null };
  }
}

/** An answer that ended with an error (its technical reason is logged, not shown). */
export function whyAnswerFailed(reason) {
  if (reason) console.warn("answer failed:", reason);
  if (reason && /cut off/.test(reason)) return "The model stopped before finishing this answer.";
  if (reason && /shutting down|drain/.test(reason)) return "The server restarted before this answer was finished.";
  return "This answer could not be finished.";
}

export const LOST_CONVERSATION =
  "The server lost this conversation's history (its storage was reset); the answer below is what was received.";
export const LOST_ANSWER =
  "This answer is no longer on the server (it expired, or the server's storage was reset); the text above is what was received.";
export const ANSWER_RUNNING =
  "Another answer is being written in this conversation (in another tab?). Retry when it is done.";
export const CONVERSATION_GONE =
  "This conversation is no longer on the server (it was deleted, it expired, or the server's storage was reset).";
