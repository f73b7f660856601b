"""Generation: prompts (records → chat-templated text + images) and the engines that sample from them.

Sits below training and evaluation, which both generate: the RL trainer for rollouts, the
evaluation runner for predictions.

    prompts   Prompt, PromptBuilder, processor_inputs, to_model
    engine    SamplingParams, Completion, the GenerationEngine interface, HFGenerateEngine
"""
