// Swagger UI on this service's OpenAPI document (no inline script: the page's policy
// runs only scripts of this origin).
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
