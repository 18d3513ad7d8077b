import { generateText, streamText, tool, jsonSchema, stepCountIs } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';
import OpenAI from 'openai';

const baseURL = process.env.GATEWAY_URL;
const apiKey = process.env.GATEWAY_KEY;
const model = process.env.GATEWAY_MODEL;
const openai = createOpenAI({ baseURL, apiKey });
const out = {};

const generated = await generateText({ model: openai(model), prompt: 'Say hello' });
out.generate = { text: generated.text, finish: generated.finishReason, usage: generated.usage };

const streamed = streamText({ model: openai(model), prompt: 'Say hello as a stream' });
let text = '';
for await (const delta of streamed.textStream) text += delta;
out.stream = { text, finish: await streamed.finishReason };

const weather = tool({
  description: 'Current weather for a city',
  inputSchema: jsonSchema({
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
    additionalProperties: false,
  }),
  execute: async ({ city }) => ({ city, temp_c: 3 }),
});
const agent = await generateText({
  model: openai(model),
  prompt: 'Use get_weather for Oslo, then tell me.',
  tools: { get_weather: weather },
  stopWhen: stepCountIs(3),
});
out.tools = {
  text: agent.text,
  steps: agent.steps.length,
  calls: agent.steps.flatMap((s) => s.toolCalls.map((c) => c.toolName)),
  results: agent.steps.flatMap((s) => s.toolResults.map((r) => r.output)),
};

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const created = await client.responses.create({ model, input: 'Hello from the Node SDK' });
out.node = { text: created.output_text, id: created.id, status: created.status };
const events = await client.responses.create({ model, input: 'Hello', stream: true });
const types = [];
for await (const event of events) types.push([event.type, event.sequence_number]);
out.nodeStream = types;
const again = await client.responses.create({
  model,
  input: 'And again',
  previous_response_id: created.id,
});
out.continued = { text: again.output_text, previous: again.previous_response_id };
out.retrieved = (await client.responses.retrieve(created.id)).id;
try {
  await client.responses.create({ model, input: 'x', temperature: 9 });
  out.error = null;
} catch (e) {
  out.error = { status: e.status, param: e.param, type: e.type };
}
console.log(JSON.stringify(out));
