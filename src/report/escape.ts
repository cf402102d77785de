/**
 * HTML escaping for text content and (double- or single-quoted) attribute values: escape-html's
 * five characters (& < > " '), for any value, as its text.
 */
import escape from 'escape-html';

export function escapeHtml(value: unknown): string {
  return escape(String(value));
}
