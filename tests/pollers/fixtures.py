"""The providers' documented example usage results, as the stubs serve them (issue 21).

Each constant names where its shape and figures come from. Where a document gives no example (or one without the
dimension a test needs), the field names and types are the document's and the figures are ours, chosen so the
expected totals can be computed by hand; those are marked "figures ours".
"""

from __future__ import annotations

from typing import Any

# ------------------------------------------------------------------------------------------------ OpenAI
# Source: OpenAI's OpenAPI spec, github.com/openai/openai-openapi (openapi.yaml), schema
# `UsageCompletionsResult` (the result schema changed in July 2026: input_uncached_tokens,
# input_cache_write_tokens and the text/audio/image splits). Its example, field for field: 5,000 input tokens =
# 3,000 uncached + 200 cache writes + 1,800 cached; uncached = 2,500 text + 300 audio + 200 image; cached =
# 1,500 text + 100 audio + 200 image; output 1,000 = 800 text + 100 audio + 100 image. (Cross-checked against a
# public test fixture that reproduces the spec example verbatim; the stored copy of the spec itself was not
# searchable here.)
OPENAI_COMPLETIONS_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.completions.result",
    "input_tokens": 5000,
    "input_cached_tokens": 1800,
    "input_cache_write_tokens": 200,
    "input_uncached_tokens": 3000,
    "output_tokens": 1000,
    "input_text_tokens": 2500,
    "output_text_tokens": 800,
    "input_cached_text_tokens": 1500,
    "input_audio_tokens": 300,
    "input_cached_audio_tokens": 100,
    "output_audio_tokens": 100,
    "input_image_tokens": 200,
    "input_cached_image_tokens": 200,
    "output_image_tokens": 100,
    "num_model_requests": 5,
    "project_id": "proj_abc",
    "user_id": "user-abc",
    "api_key_id": "key_abc",
    "model": "gpt-4o-mini-2024-07-18",
    "batch": False,
    "service_tier": "default",
}
# The same schema, a batch row on the flex tier (splits the bucket: batch and service_tier in the id).
# Figures ours.
OPENAI_COMPLETIONS_BATCH_FLEX: dict[str, Any] = {
    **OPENAI_COMPLETIONS_EXAMPLE,
    "input_tokens": 10_000,
    "input_cached_tokens": 0,
    "input_cache_write_tokens": 0,
    "input_uncached_tokens": 10_000,
    "output_tokens": 2_000,
    "input_text_tokens": 10_000,
    "output_text_tokens": 2_000,
    "input_cached_text_tokens": 0,
    "input_audio_tokens": 0,
    "input_cached_audio_tokens": 0,
    "output_audio_tokens": 0,
    "input_image_tokens": 0,
    "input_cached_image_tokens": 0,
    "output_image_tokens": 0,
    "num_model_requests": 20,
    "batch": True,
    "service_tier": "flex",
}
# Before July 2026 (`UsageCompletionsResult` of 2024-2026): input_tokens / output_tokens were text tokens, audio
# came separately in input_audio_tokens / output_audio_tokens. Figures ours.
OPENAI_COMPLETIONS_LEGACY: dict[str, Any] = {
    "object": "organization.usage.completions.result",
    "input_tokens": 1000,
    "input_cached_tokens": 400,
    "output_tokens": 300,
    "input_audio_tokens": 50,
    "output_audio_tokens": 20,
    "num_model_requests": 3,
    "project_id": "proj_abc",
    "model": "gpt-4o-audio-preview",
    "batch": None,
    "service_tier": None,
}
# `UsageEmbeddingsResult` / `UsageModerationsResult` (the spec's fields: input_tokens, num_model_requests and the
# grouping keys). Figures ours.
OPENAI_EMBEDDINGS_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.embeddings.result",
    "input_tokens": 16,
    "num_model_requests": 2,
    "project_id": "proj_abc",
    "user_id": "user-abc",
    "api_key_id": "key_abc",
    "model": "text-embedding-ada-002-v2",
}
OPENAI_MODERATIONS_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.moderations.result",
    "input_tokens": 16,
    "num_model_requests": 2,
    "project_id": "proj_abc",
    "user_id": "user-abc",
    "api_key_id": "key_abc",
    "model": "text-moderation",
}
# `UsageImagesResult`: the spec's example, verbatim (2 images, 1024x1024, image.generation, dall-e-3).
OPENAI_IMAGES_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.images.result",
    "images": 2,
    "num_model_requests": 2,
    "size": "1024x1024",
    "source": "image.generation",
    "project_id": "proj_abc",
    "user_id": "user-abc",
    "api_key_id": "key_abc",
    "model": "dall-e-3",
}
# The same schema, a larger size from image.edit (splits the bucket by size and source). Figures ours.
OPENAI_IMAGES_TALL: dict[str, Any] = {
    **OPENAI_IMAGES_EXAMPLE,
    "images": 3,
    "num_model_requests": 1,
    "size": "1024x1536",
    "source": "image.edit",
    "model": "gpt-image-1",
}
# `UsageAudioSpeechesResult` (the spec's fields: characters, num_model_requests, grouping keys). Figures ours.
OPENAI_AUDIO_SPEECHES_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.audio_speeches.result",
    "characters": 45,
    "num_model_requests": 1,
    "project_id": "proj_abc",
    "user_id": "user-abc",
    "api_key_id": "key_abc",
    "model": "tts-1",
}
# `UsageAudioTranscriptionsResult` (the spec's fields: seconds, num_model_requests, grouping keys). Figures ours.
OPENAI_AUDIO_TRANSCRIPTIONS_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.audio_transcriptions.result",
    "seconds": 20,
    "num_model_requests": 1,
    "project_id": "proj_abc",
    "user_id": "user-abc",
    "api_key_id": "key_abc",
    "model": "whisper-1",
}
# `/v1/organization/usage/web_search_calls` (object organization.usage.web_searches.result: num_requests,
# num_model_requests, groupable by context_level). Figures ours.
OPENAI_WEB_SEARCH_EXAMPLE: dict[str, Any] = {
    "object": "organization.usage.web_searches.result",
    "num_requests": 7,
    "num_model_requests": 4,
    "context_level": "medium",
    "project_id": "proj_abc",
    "model": "gpt-4o-mini-2024-07-18",
}

# ------------------------------------------------------------------------------------------------ Anthropic
# Source: Anthropic Admin API, "Get Messages Usage Report",
# https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages — the example response's result
# (1,500 uncached; cache creation 1,000 one-hour + 500 five-minute; 200 cache reads; 500 output; 10 web searches;
# workspace wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ, standard tier, 0-200k context). The page's newer example carries
# inference_geo "global"; this one is "us" (the documented values: global | us | not_available).
ANTHROPIC_MESSAGES_EXAMPLE: dict[str, Any] = {
    "uncached_input_tokens": 1500,
    "cache_creation": {"ephemeral_1h_input_tokens": 1000, "ephemeral_5m_input_tokens": 500},
    "cache_read_input_tokens": 200,
    "output_tokens": 500,
    "server_tool_use": {"web_search_requests": 10},
    "api_key_id": "apikey_01Rj2N8SVvo6BePZj99NhmiT",
    "workspace_id": "wrkspc_01JwQvzr7rXLA5AGx3HKfFUJ",
    "model": "claude-sonnet-4-20250514",
    "service_tier": "standard",
    "context_window": "0-200k",
    "inference_geo": "us",
}
# The same schema, served globally from the default workspace (workspace_id null) with a 1M context. Figures ours.
ANTHROPIC_MESSAGES_GLOBAL: dict[str, Any] = {
    **ANTHROPIC_MESSAGES_EXAMPLE,
    "uncached_input_tokens": 4000,
    "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
    "cache_read_input_tokens": 0,
    "output_tokens": 800,
    "server_tool_use": {"web_search_requests": 0},
    "workspace_id": None,
    "context_window": "200k-1M",
    "inference_geo": "global",
}

# ------------------------------------------------------------------------------------------------ OpenRouter
# Source: OpenRouter API reference, "Get user activity", https://openrouter.ai/docs/api/api-reference/analytics/
# get-user-activity — the item's fields (date, model, model_permaslug, endpoint_id, provider_name, usage,
# byok_usage_inference, requests, prompt_tokens, completion_tokens, reasoning_tokens); a mixed row (credits and
# BYOK) of openai/gpt-4.1 via OpenAI. Figures ours.
OPENROUTER_BYOK_EXAMPLE: dict[str, Any] = {
    "model": "openai/gpt-4.1",
    "model_permaslug": "openai/gpt-4.1-2025-04-14",
    "provider_name": "OpenAI",
    "usage": 0.015,
    "byok_usage_inference": 0.012,
    "requests": 5,
    "prompt_tokens": 50,
    "completion_tokens": 125,
    "reasoning_tokens": 25,
}
# A BYOK-only row (usage = the 5% fee) of an Anthropic model. Figures ours.
OPENROUTER_BYOK_ONLY: dict[str, Any] = {
    "model": "anthropic/claude-sonnet-4",
    "model_permaslug": "anthropic/claude-4-sonnet-20250522",
    "provider_name": "Anthropic",
    "usage": 0.005,
    "byok_usage_inference": 0.1,
    "requests": 10,
    "prompt_tokens": 20_000,
    "completion_tokens": 3_000,
    "reasoning_tokens": 0,
}
