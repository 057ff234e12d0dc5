// Parley's OpenAI-compatible API through the official `openai` Node package: one streamed
// completion with usage. Run by api/tests/openai_sdk.rs with PARLEY_OPENAI_NODE_MODULES (the
// node_modules holding `openai`), PARLEY_BASE_URL and PARLEY_KEY; the model `fake` answers
// "Hello there" with usage 7 + 2. Exits non-zero on failure.
const path = require("node:path");
const assert = require("node:assert/strict");
const { OpenAI } = require(path.join(process.env.PARLEY_OPENAI_NODE_MODULES, "openai"));

async function main() {
  const client = new OpenAI({ baseURL: process.env.PARLEY_BASE_URL, apiKey: process.env.PARLEY_KEY, maxRetries: 0 });
  const stream = await client.chat.completions.create({
    model: "fake",
    messages: [{ role: "user", content: "Hi" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let last;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    last = chunk;
  }
  assert.equal(text, "Hello there");
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.total_tokens, 9);
  console.log("ok node streaming");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
