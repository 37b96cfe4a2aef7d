package authserver

import (
	"net/http"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
)

// The TokenReview versions kube-apiserver speaks; the answer echoes the
// request's (kube-apiserver defaults to v1beta1). Both share one JSON shape.
const (
	tokenReviewV1      = "authentication.k8s.io/v1"
	tokenReviewV1beta1 = "authentication.k8s.io/v1beta1"
)

// Extra keys on every authenticated TokenReview.
const (
	ExtraName      = "apikeys.dev/name"
	ExtraNamespace = "apikeys.dev/namespace"
	ExtraScopes    = "apikeys.dev/scopes"
	ExtraTokenHint = "apikeys.dev/token-hint"
)

// serveTokenReview is kube-apiserver's webhook token authenticator.
func (s *Server) serveTokenReview(w http.ResponseWriter, r *http.Request, now time.Time) result {
	var review authenticationv1.TokenReview
	if !readJSON(w, r, &review) {
		return resultBadRequest
	}
	if review.Kind != "TokenReview" || (review.APIVersion != tokenReviewV1 && review.APIVersion != tokenReviewV1beta1) {
		writeError(w, http.StatusBadRequest, "want a TokenReview of authentication.k8s.io/v1 or v1beta1")
		return resultBadRequest
	}
	// kube-apiserver never sends an empty token (its own TokenReview API
	// refuses one as a bad request). A long one is just not ours, and gets
	// the answer kube-apiserver caches: an error it would not cache, and
	// would log, on every request that carries it.
	if review.Spec.Token == "" {
		writeError(w, http.StatusBadRequest, tokenRequired)
		return resultBadRequest
	}

	answer := authenticationv1.TokenReview{TypeMeta: review.TypeMeta}
	res := s.review(&review.Spec, &answer.Status, now)
	writeJSON(w, http.StatusOK, &answer)
	return res
}

// review fills status for spec, judged at now, and returns the metrics
// result.
func (s *Server) review(spec *authenticationv1.TokenReviewSpec, status *authenticationv1.TokenReviewStatus, now time.Time) result {
	if !s.index.Synced() {
		// kube-apiserver does not cache an answer with an error, so a key
		// created during start-up is not refused for the whole cache TTL.
		status.Error = "apikey-operator: the token index has not synced yet"
		return resultNotSynced
	}
	e, code := s.index.Verify(spec.Token, now)
	if code != CodeValid {
		return result(code)
	}
	// A key without audiences answers with none, which TokenReview reads as
	// "kube-apiserver's own audiences" (as for a legacy ServiceAccount
	// token): echoing the request's would make the key good for any service
	// that asks TokenReview about its own audience.
	var audiences []string
	if allowed := e.Audiences(); len(allowed) > 0 {
		audiences = intersect(spec.Audiences, allowed)
		if len(audiences) == 0 {
			return result(CodeAudienceMismatch)
		}
	}
	e.markUsed(now)
	status.Authenticated = true
	status.Audiences = audiences
	status.User = authenticationv1.UserInfo{
		Username: e.Username,
		UID:      e.UID,
		Groups:   e.Groups(),
		Extra: map[string]authenticationv1.ExtraValue{
			ExtraName:      {e.Name},
			ExtraNamespace: {e.Namespace()},
			ExtraScopes:    authenticationv1.ExtraValue(e.Scopes()),
			ExtraTokenHint: {e.Hint},
		},
	}
	return result(code)
}

func intersect(asked, allowed []string) []string {
	var out []string
	for _, a := range asked {
		if contains(allowed, a) {
			out = append(out, a)
		}
	}
	return out
}
