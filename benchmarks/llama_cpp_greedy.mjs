// Greedy generation in llama.cpp itself, through node-llama-cpp's prebuilt CPU build (installed by `make setup`
// into the virtual environment; benchmarks/llama_cpp_check.py finds it and runs this script).
//
//   node benchmarks/llama_cpp_greedy.mjs NODE_LLAMA_CPP_DIR jobs.json
//
// jobs.json: [{"model": "a.gguf", "ids": [...] | "text": "...", "n": 16}, ...]. A "text" prompt is tokenised by
// llama.cpp from the file's own vocabulary (special tokens such as <|im_start|> parsed). Prints one JSON line:
// [{"prompt": [ids], "generated": [n greedy ids]}, ...]; end-of-generation tokens are yielded and do not stop it.
import {readFileSync} from "node:fs";
import {join} from "node:path";
import {pathToFileURL} from "node:url";

const {getLlama} = await import(pathToFileURL(join(process.argv[2], "dist", "index.js")).href);
const jobs = JSON.parse(readFileSync(process.argv[3], "utf8"));
const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const results = [];
for (const job of jobs) {
    const model = await llama.loadModel({modelPath: job.model});
    const prompt = job.ids ?? model.tokenize(job.text, true);
    const generated = [];
    if (job.n > 0) {
        const context = await model.createContext({contextSize: Math.max(64, prompt.length + job.n), threads: 1});
        for await (const token of context.getSequence().evaluate(prompt, {temperature: 0, yieldEogToken: true})) {
            generated.push(token);
            if (generated.length >= job.n) break;
        }
        await context.dispose();
    }
    results.push({prompt: Array.from(prompt), generated});
    await model.dispose();
}
console.log(JSON.stringify(results));
await llama.dispose();
