// Package workflows holds GitSec's Temporal workflows. Workflow code is deterministic and never
// does I/O itself: no pgx, net/http, go-git or gocloud.dev imports here (a test enforces it).
package workflows

import "go.temporal.io/sdk/temporal"

// Custom search attributes let an operator find every workflow of a tenant, installation or
// repository in the Temporal UI. The dev server and the test harness register them by name.
var (
	SearchAttrTenant       = temporal.NewSearchAttributeKeyKeyword("GitsecTenant")
	SearchAttrInstallation = temporal.NewSearchAttributeKeyKeyword("GitsecInstallation")
	SearchAttrRepository   = temporal.NewSearchAttributeKeyKeyword("GitsecRepository")
)

// SearchAttributeTypes returns the custom search attributes by name with their Temporal type
// name, in the form `temporal server start-dev --search-attribute NAME=TYPE` expects.
func SearchAttributeTypes() map[string]string {
	return map[string]string{
		SearchAttrTenant.GetName():       "Keyword",
		SearchAttrInstallation.GetName(): "Keyword",
		SearchAttrRepository.GetName():   "Keyword",
	}
}
